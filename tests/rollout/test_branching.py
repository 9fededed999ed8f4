"""Entropy-fork branching: fork selection vs numpy, prefix splice, greedy reproduction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from entropix.models import Llama, LlamaConfig
from entropix.rollout import branch, fork_positions, generate, make_sampler

CFG = LlamaConfig(
    vocab_size=40, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=48,
    max_seq_len=64, init_std=0.3,
)  # fmt: skip
MODEL = Llama(CFG, rngs=nnx.Rngs(0))
PROMPTS = jax.random.randint(jax.random.key(1), (2, 4), 1, CFG.vocab_size)
MASK = jnp.array([[1, 1, 1, 1], [0, 1, 1, 1]], bool)


def test_fork_positions_are_the_top_entropy_valid_tokens():
    rng = np.random.default_rng(0)
    entropy = rng.uniform(size=(3, 7)).astype(np.float32)
    mask = np.arange(7)[None, :] < np.array([[7], [4], [1]])
    positions, valid = fork_positions(jnp.asarray(entropy), jnp.asarray(mask), 2)
    for row in range(3):
        scored = np.where(mask[row], entropy[row], -np.inf)
        want = np.argsort(-scored, kind="stable")[:2]
        np.testing.assert_array_equal(
            np.asarray(positions[row])[np.asarray(valid[row])], want[: min(2, mask[row].sum())]
        )
    np.testing.assert_array_equal(valid, [[1, 1], [1, 1], [1, 0]])
    with pytest.raises(ValueError, match="exceed the completion length"):
        fork_positions(jnp.asarray(entropy), jnp.asarray(mask), 8)


def test_branches_keep_the_prefix_and_greedy_reproduces_the_source():
    source = generate(
        MODEL,
        PROMPTS,
        MASK,
        key=jax.random.key(2),
        max_new_tokens=6,
        sampler=make_sampler("temperature", temperature=1.5),
    )
    greedy_src = generate(MODEL, PROMPTS, MASK, key=jax.random.key(2), max_new_tokens=6)
    out = branch(MODEL, greedy_src, key=jax.random.key(3), k=2, num_branches=2)
    assert out.rollout.tokens.shape == (2 * 2 * 2, 6)
    np.testing.assert_array_equal(out.source_row, [0, 0, 0, 0, 1, 1, 1, 1])
    # greedy continuation of a greedy rollout's prefix is the rollout itself
    rows = np.asarray(out.source_row)
    np.testing.assert_array_equal(out.rollout.tokens, np.asarray(greedy_src.tokens)[rows])
    np.testing.assert_allclose(
        out.rollout.logprobs, np.asarray(greedy_src.logprobs)[rows], atol=1e-5
    )
    # sampled branches of a sampled rollout: identical before the fork, re-sampled from it on
    sampled = branch(
        MODEL,
        source,
        key=jax.random.key(4),
        k=3,
        sampler=make_sampler("temperature", temperature=1.5),
    )
    tokens, fork = np.asarray(sampled.rollout.tokens), np.asarray(sampled.fork_position)
    src = np.asarray(source.tokens)[np.asarray(sampled.source_row)]
    for i in range(len(fork)):
        np.testing.assert_array_equal(tokens[i, : fork[i]], src[i, : fork[i]])
    want_forks, _ = fork_positions(source.entropy, source.mask, 3)
    np.testing.assert_array_equal(fork.reshape(2, 3), want_forks)
    assert not np.array_equal(tokens, src)
    np.testing.assert_array_equal(
        sampled.rollout.prompt_tokens,
        np.asarray(source.prompt_tokens)[np.asarray(sampled.source_row)],
    )
