"""Decoder: layers and the full forward vs a numpy reference, GQA, KV cache, padding, presets."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from entropix.entropy import token_logprobs_and_entropy
from entropix.models import (
    PRESETS,
    Llama,
    LlamaConfig,
    RMSNorm,
    apply_rope,
    get_preset,
    rope_cos_sin,
)
from tests.models import reference

CFG = LlamaConfig(
    vocab_size=61, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=48,
    max_seq_len=64, rope_theta=500.0, rms_eps=1e-6, init_std=0.2,
)  # fmt: skip


def _model(cfg=CFG, seed=0):
    return Llama(cfg, rngs=nnx.Rngs(seed))


def _tokens(shape, seed=1, vocab=CFG.vocab_size):
    return jax.random.randint(jax.random.key(seed), shape, 0, vocab)


def test_rmsnorm_matches_numpy():
    norm = RMSNorm(8, eps=1e-5)
    norm.weight[...] = jnp.linspace(0.5, 2.0, 8)
    x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)
    want = reference.rms_norm(x.astype(np.float64), np.linspace(0.5, 2.0, 8), 1e-5)
    np.testing.assert_allclose(norm(jnp.asarray(x)), want, rtol=1e-5, atol=1e-6)


def test_rope_matches_numpy_rotation():
    x = np.random.default_rng(1).normal(size=(1, 6, 3, 8)).astype(np.float32)
    positions = np.array([[0, 1, 2, 5, 9, 100]])
    cos, sin = rope_cos_sin(jnp.asarray(positions), 8, theta=1000.0)
    got = apply_rope(jnp.asarray(x), cos, sin)
    want = reference.rope(x[0].astype(np.float64), positions[0], 1000.0)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)
    # rotations preserve the norm of every head vector
    np.testing.assert_allclose(jnp.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_forward_and_attention_entropy_match_numpy_reference():
    model = _model()
    tokens = _tokens((2, 7))
    out = model(tokens, return_attention_entropy=True)
    assert out.logits.shape == (2, 7, CFG.vocab_size) and out.logits.dtype == jnp.float32
    assert out.attention_entropy.shape == (CFG.num_layers, 2, CFG.num_heads, 7)
    for row in range(2):
        logits, entropy = reference.forward(model, np.asarray(tokens[row]))
        np.testing.assert_allclose(out.logits[row], logits, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out.attention_entropy[:, row], entropy, rtol=1e-4, atol=1e-5)


def test_untied_head_matches_reference():
    model = _model(dataclasses.replace(CFG, tie_embeddings=False))
    tokens = _tokens((1, 5), seed=3)
    logits, _ = reference.forward(model, np.asarray(tokens[0]))
    np.testing.assert_allclose(model(tokens).logits[0], logits, rtol=1e-4, atol=1e-4)
    assert model(tokens).unembed.shape == (CFG.dim, CFG.vocab_size)


def test_family_switches_match_numpy_reference():
    """Biases (q/k/v, o, MLP), q/k RMSNorm, head size != dim / heads, a sliding window shorter
    than the sequence, and llama3 RoPE scaling whose frequencies hit all three branches."""
    cfg = dataclasses.replace(
        CFG, explicit_head_dim=12, qkv_bias=True, o_bias=True, mlp_bias=True, qk_norm=True,
        sliding_window=3, rope_type="llama3", rope_factor=8.0, rope_original_max_len=64,
    )  # fmt: skip
    model = _model(cfg)
    rng = np.random.default_rng(0)
    for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if path[-1] in ("bias", "weight"):  # zeros / ones at init: draw them
            value.set_value(jnp.asarray(rng.normal(0.5, 0.3, value.get_value().shape)))
    tokens = _tokens((1, 8), seed=11)
    padded = jnp.concatenate([jnp.zeros((1, 2), tokens.dtype), tokens], axis=1)
    mask = jnp.array([[0, 0] + [1] * 8], bool)
    logits, _ = reference.forward(model, np.asarray(padded[0]), np.asarray(mask[0]))
    got = model(padded, attention_mask=mask).logits[0]
    np.testing.assert_allclose(got[2:], logits[2:], rtol=1e-4, atol=1e-4)
    assert cfg.num_params() == sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_gqa_equals_mha_with_repeated_kv():
    gqa = _model()
    mha = _model(dataclasses.replace(CFG, num_kv_heads=CFG.num_heads), seed=5)
    shared = nnx.Not(nnx.Any(nnx.PathContains("k_proj"), nnx.PathContains("v_proj")))
    nnx.update(mha, nnx.state(gqa, shared))
    hd, rep = CFG.head_dim, CFG.num_heads // CFG.num_kv_heads
    for g_layer, m_layer in zip(gqa.layers, mha.layers, strict=True):
        for name in ("k_proj", "v_proj"):
            kernel = getattr(g_layer.attn, name).kernel[...]
            heads = kernel.reshape(CFG.dim, CFG.num_kv_heads, hd)
            getattr(m_layer.attn, name).kernel[...] = jnp.repeat(heads, rep, axis=1).reshape(
                CFG.dim, CFG.num_heads * hd
            )
    tokens = _tokens((2, 9), seed=4)
    np.testing.assert_allclose(gqa(tokens).logits, mha(tokens).logits, rtol=1e-5, atol=1e-5)


def test_cached_decoding_equals_full_forward():
    model = _model()
    tokens = _tokens((2, 10), seed=6)
    full = model(tokens).logits
    cache = model.init_cache(2, 12)
    out = model(tokens[:, :4], cache=cache)
    pieces = [out.logits]
    cache = out.cache
    for t in range(4, 10):
        out = model(tokens[:, t : t + 1], cache=cache)
        pieces.append(out.logits)
        cache = out.cache
    assert int(cache.length) == 10
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, rtol=1e-5, atol=1e-5)


def test_left_padding_does_not_change_real_token_logits():
    model = _model()
    tokens = _tokens((1, 6), seed=7)
    padded = jnp.concatenate([jnp.zeros((1, 3), tokens.dtype), tokens], axis=1)
    mask = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1, 1]], bool)
    out = model(padded, attention_mask=mask, return_attention_entropy=True)
    np.testing.assert_allclose(out.logits[:, 3:], model(tokens).logits, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(out.attention_entropy[..., :3]) == 0)
    want, _ = reference.forward(model, np.asarray(padded[0]), np.asarray(mask[0]))
    np.testing.assert_allclose(out.logits[0, 3:], want[3:], rtol=1e-4, atol=1e-4)
    # the same holds through a cache: padded prefill, then one decode step
    cache = model.init_cache(1, 10)
    step = model(padded, cache=cache, attention_mask=mask)
    nxt = jnp.array([[5]])
    cached = model(nxt, cache=step.cache).logits[:, 0]
    direct = model(jnp.concatenate([tokens, nxt], axis=1)).logits[:, -1]
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)


def test_hidden_and_unembed_feed_the_fused_path():
    model = _model()
    tokens = _tokens((2, 6), seed=8)
    out = model(tokens)
    targets = jnp.roll(tokens, -1, axis=1).reshape(-1)
    logp, ent = token_logprobs_and_entropy(
        out.hidden.reshape(-1, CFG.dim), out.unembed, targets, chunk=16
    )
    log_probs = jax.nn.log_softmax(out.logits.reshape(-1, CFG.vocab_size))
    np.testing.assert_allclose(logp, log_probs[jnp.arange(12), targets], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, -jnp.sum(jnp.exp(log_probs) * log_probs, -1), atol=1e-5)
    no_logits = model(tokens, return_logits=False)
    assert no_logits.logits is None
    np.testing.assert_allclose(no_logits.hidden, out.hidden)
    np.testing.assert_allclose(model.unembedding(), out.unembed)


def test_bfloat16_compute_keeps_fp32_params_and_logits():
    cfg = dataclasses.replace(CFG, dtype="bfloat16")
    model = _model(cfg)
    tokens = _tokens((2, 5), seed=9)
    out = model(tokens, return_attention_entropy=True)
    assert out.logits.dtype == jnp.float32 and out.hidden.dtype == jnp.bfloat16
    assert out.attention_entropy.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    ref = _model()(tokens).logits
    np.testing.assert_allclose(out.logits, ref, atol=0.1)


def test_forward_jits_and_differentiates():
    model = _model(dataclasses.replace(CFG, use_sigma_reparam=True))
    tokens = _tokens((2, 5), seed=10)

    @nnx.jit
    def loss_and_grad(model, tokens):
        def loss_fn(model):
            logits = model(tokens).logits
            return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

        return nnx.value_and_grad(loss_fn)(model)

    loss, grads = loss_and_grad(model, tokens)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_presets_have_the_documented_sizes():
    tiny = _model(PRESETS["tiny"])
    count = sum(x.size for x in jax.tree.leaves(nnx.state(tiny, nnx.Param)))
    assert count == PRESETS["tiny"].num_params()
    assert 1e6 <= count <= 5e6
    assert 20e6 <= PRESETS["small"].num_params() <= 40e6
    assert abs(PRESETS["smollm2_135m"].num_params() - 134.5e6) < 0.1e6
    assert get_preset("tiny", vocab_size=64).vocab_size == 64


def test_bad_inputs_give_clear_errors():
    model = _model()
    with pytest.raises(TypeError, match="tokens must be integer"):
        model(jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="tokens must have rank 2"):
        model(jnp.ones((3,), jnp.int32))
    with pytest.raises(ValueError, match="attention_mask"):
        model(jnp.ones((1, 3), jnp.int32), attention_mask=jnp.ones((1, 4), bool))
    with pytest.raises(ValueError, match="positions"):
        model(jnp.ones((1, 3), jnp.int32), positions=jnp.zeros((1, 2), jnp.int32))
    with pytest.raises(ValueError, match="num_kv_heads"):
        dataclasses.replace(CFG, num_kv_heads=3)
    with pytest.raises(ValueError, match="dtype"):
        dataclasses.replace(CFG, dtype="float8")
    with pytest.raises(ValueError, match="preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="do not fit a KV cache of 2 slots"):
        model(jnp.ones((1, 3), jnp.int32), cache=model.init_cache(1, 2))
    assert dataclasses.replace(CFG, dtype=jnp.bfloat16).dtype == "bfloat16"
