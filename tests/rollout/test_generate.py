"""generate: cached == uncached == teacher-forced forward, padding, EOS, determinism, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from entropix.models import Llama, LlamaConfig
from entropix.rollout import generate, left_align, make_sampler

CFG = LlamaConfig(
    vocab_size=40, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=48,
    max_seq_len=64, init_std=0.3,
)  # fmt: skip
MODEL = Llama(CFG, rngs=nnx.Rngs(0))
PROMPTS = jax.random.randint(jax.random.key(1), (3, 5), 1, CFG.vocab_size)
MASK = jnp.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
KEY = jax.random.key(2)


def _gen(**kw):
    args = dict(key=KEY, max_new_tokens=6, sampler=make_sampler("temperature"))
    return generate(MODEL, PROMPTS, MASK, **{**args, **kw})


def test_cached_equals_uncached():
    for sampler in (make_sampler("greedy"), make_sampler("top_p", p=0.9, temperature=1.3)):
        a, b = _gen(sampler=sampler, use_cache=True), _gen(sampler=sampler, use_cache=False)
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
        np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-5)
        np.testing.assert_array_equal(a.mask, b.mask)


def test_logprobs_and_entropy_equal_a_teacher_forced_forward():
    r = _gen(score_temperature=0.8)
    tokens, mask = r.sequences()
    logits = MODEL(tokens, attention_mask=mask).logits / 0.8
    p = r.prompt_tokens.shape[1]
    logp = jax.nn.log_softmax(logits[:, p - 1 : -1])
    want_lp = jnp.take_along_axis(logp, r.tokens[..., None], -1)[..., 0]
    want_h = -jnp.sum(jnp.exp(logp) * logp, -1)
    np.testing.assert_allclose(r.logprobs, want_lp, atol=1e-4)
    np.testing.assert_allclose(r.entropy, want_h, atol=1e-4)


def test_padding_side_does_not_change_results():
    r = _gen(sampler=make_sampler("greedy"))
    for row in range(3):
        real = PROMPTS[row][MASK[row]]
        alone = generate(MODEL, real[None], key=KEY, max_new_tokens=6)
        np.testing.assert_array_equal(alone.tokens[0], r.tokens[row])
        np.testing.assert_allclose(alone.logprobs[0], r.logprobs[row], atol=1e-5)
    # prompts come back left-aligned, real tokens in order
    np.testing.assert_array_equal(r.prompt_mask[2], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(r.prompt_tokens[2, 2:], PROMPTS[2, :3])
    tokens, mask = left_align(jnp.array([[7, 0, 8, 0]]), jnp.array([[1, 0, 1, 0]]))
    np.testing.assert_array_equal(tokens, [[0, 0, 7, 8]])
    np.testing.assert_array_equal(mask, [[False, False, True, True]])


def test_eos_stops_a_row_and_pads_the_rest():
    free = _gen(sampler=make_sampler("greedy"), max_new_tokens=8)
    eos = int(free.tokens[0, 2])
    r = _gen(sampler=make_sampler("greedy"), max_new_tokens=8, eos_ids=[eos], pad_id=0)
    for row in range(3):
        hits = np.flatnonzero(np.asarray(free.tokens[row]) == eos)
        stop = hits[0] + 1 if hits.size else 8
        np.testing.assert_array_equal(r.mask[row], np.arange(8) < stop)
        np.testing.assert_array_equal(r.tokens[row, :stop], free.tokens[row, :stop])
        assert np.all(np.asarray(r.tokens[row, stop:]) == 0)
        assert np.all(np.asarray(r.logprobs[row, stop:]) == 0)
    np.testing.assert_array_equal(r.lengths, np.asarray(r.mask).sum(-1))


def test_plain_function_sampler_works():
    from entropix.rollout import greedy

    a = _gen(sampler=greedy)
    np.testing.assert_array_equal(a.tokens, _gen(sampler=make_sampler("greedy")).tokens)


def test_fixed_key_is_deterministic_and_keys_differ():
    a, b = _gen(), _gen()
    np.testing.assert_array_equal(a.tokens, b.tokens)
    c = _gen(key=jax.random.key(3), max_new_tokens=12)
    d = _gen(max_new_tokens=12)
    assert not np.array_equal(c.tokens, d.tokens)


def test_generation_leaves_the_model_state_untouched():
    model = Llama(dataclasses.replace(CFG, use_sigma_reparam=True), rngs=nnx.Rngs(1))
    before = jax.tree.map(np.asarray, nnx.state(model))
    generate(model, PROMPTS, MASK, key=KEY, max_new_tokens=3)
    after = jax.tree.map(np.asarray, nnx.state(model))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    assert not model.layers[0].attn.q_proj.deterministic  # still in training mode


def test_bad_inputs():
    with pytest.raises(TypeError, match="prompt_tokens must be integer"):
        generate(MODEL, jnp.ones((1, 3)), key=KEY, max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt_mask"):
        generate(MODEL, PROMPTS, jnp.ones((3, 4), bool), key=KEY, max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens must be > 0"):
        generate(MODEL, PROMPTS, key=KEY, max_new_tokens=0)
    with pytest.raises(TypeError, match="sampler must be callable"):
        generate(MODEL, PROMPTS, key=KEY, max_new_tokens=2, sampler="greedy")
