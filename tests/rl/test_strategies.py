"""Rollout strategies on hand-built cases: a fake deterministic policy whose entropies are given,
so the fork positions, the branch counts, the spliced rows and the token budget are known.

The fake ``generate`` answers call c (0, 1, ...) with tokens ``100 (c + 1) + 10 r + t`` for row r
and position t, the entropies ``ENTROPY[c]`` given by the test, and a mask of ``lengths[c]``
tokens per row (all N when not given).
"""

import jax
import numpy as np
import pytest

from entropix import rl
from entropix.rl.strategies import (
    aepo_branch,
    aepo_fork_weights,
    cure,
    entropy_fork,
    ettrl_tree,
    sample,
)
from entropix.rollout import Rollout
from tests.rl import tiny

P_LEN, N = 2, 4


class FakePolicy:
    def __init__(self, entropy, lengths=None):
        self.entropy, self.lengths, self.calls = entropy, lengths or {}, []

    def __call__(self, prompt, prompt_mask, key):
        c = len(self.calls)
        self.calls.append((np.asarray(prompt), np.asarray(prompt_mask)))
        r = prompt.shape[0]
        tokens = 100 * (c + 1) + 10 * np.arange(r)[:, None] + np.arange(N)[None, :]
        length = np.asarray(self.lengths.get(c, [N] * r))[:, None]
        mask = np.arange(N)[None, :] < length
        entropy = np.asarray(self.entropy[c], np.float32) * mask
        return Rollout(
            np.asarray(prompt),
            np.asarray(prompt_mask),
            np.where(mask, tokens, 0).astype(np.int32),
            -entropy,  # log-probs: anything traceable to the call
            entropy,
            mask,
        )


def _prompts(p: int):
    return (np.arange(p * P_LEN).reshape(p, P_LEN) + 1).astype(np.int32), np.ones((p, P_LEN), bool)


def _run(strategy, policy, prompts, group_size, step=0):
    prompt, mask = _prompts(prompts)
    strategy.check(group_size, N)
    return strategy(
        policy, prompt, mask, group_size=group_size, key=jax.random.PRNGKey(0), step=step, pad_id=0
    )


def _assert_branch(rows, row, parent, fork):
    """Row ``row`` is row ``parent`` up to ``fork``, then a new continuation."""
    r = rows.rollout
    np.testing.assert_array_equal(r.tokens[row, :fork], r.tokens[parent, :fork])
    np.testing.assert_array_equal(r.entropy[row, :fork], r.entropy[parent, :fork])
    assert r.tokens[row, fork] != r.tokens[parent, fork]
    assert rows.prompt[row] == rows.prompt[parent]
    assert rows.generated[row] == r.mask[row, fork:].sum()


def test_ref_sample():
    policy = FakePolicy({0: np.ones((6, N))}, lengths={0: [1, 2, 3, 4, 4, 4]})
    rows = _run(sample(), policy, prompts=2, group_size=3)
    np.testing.assert_array_equal(rows.prompt, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(rows.generated, [1, 2, 3, 4, 4, 4])
    prompt, _ = _prompts(2)
    np.testing.assert_array_equal(policy.calls[0][0], np.repeat(prompt, 3, axis=0))


def test_ref_entropy_fork():
    # 2 prompts x 6 rows: 2 roots each (1 + 2 forks x 1 branch = 3 rows per root)
    roots = np.asarray(
        [[0.1, 0.9, 0.2, 0.5], [0.3, 0.3, 0.8, 0.1], [0.7, 0.6, 0.5, 0.4], [0.2, 0, 0, 0]]
    )
    policy = FakePolicy({0: roots, 1: np.ones((8, N))}, lengths={0: [4, 4, 4, 1]})
    rows = _run(entropy_fork(forks=2, branches=1), policy, prompts=2, group_size=6)
    assert len(rows.prompt) == 12 and np.bincount(rows.prompt).tolist() == [6, 6]
    # top-2 positions per root (ties: earlier); root 3 has one token: its 2nd fork is position 0
    want = [(0, 1), (0, 3), (1, 2), (1, 0), (2, 0), (2, 1), (3, 0), (3, 0)]
    for m, (parent, fork) in enumerate(want):
        _assert_branch(rows, 4 + m, parent, fork)
    np.testing.assert_array_equal(policy.calls[1][1][:, P_LEN:].sum(axis=1), [f for _, f in want])
    assert rows.generated.sum() == 13 + sum(N - f for _, f in want)
    with pytest.raises(ValueError, match="multiple of 1 \\+ forks x branches = 3"):
        entropy_fork(forks=2, branches=1).check(8, N)


def test_ref_ettrl_tree():
    # one prompt, G = 5: 1 root + 2 iterations x 2 forks x 1 branch
    root = np.asarray([[0.1, 0.9, 0.5, 0.7]])
    level1 = np.asarray([[0, 0, 2.0, 0.3], [0, 0, 0, 0]])  # new tokens' entropies (from 0)
    policy = FakePolicy({0: root, 1: level1, 2: np.ones((2, N))})
    rows = _run(ettrl_tree(forks=2, branches=1, iterations=2), policy, prompts=1, group_size=5)
    assert len(rows.prompt) == 5
    # level 1: the root's top-2 tokens, positions 1 (0.9) and 3 (0.7)
    _assert_branch(rows, 1, 0, 1)
    _assert_branch(rows, 2, 0, 3)
    # branch 1 holds the new entropies from its fork on: [0.1, 0, 0, 2.0]; open tokens: the
    # root's 0 (0.1), 2 (0.5) and branch 1's 2 (0.0), 3 (2.0) -> forks (1, 3) and (0, 2)
    np.testing.assert_allclose(rows.rollout.entropy[1], [0.1, 0.0, 0.0, 2.0])
    _assert_branch(rows, 3, 1, 3)
    _assert_branch(rows, 4, 0, 2)
    assert rows.generated.tolist() == [4, 3, 1, 1, 2]
    with pytest.raises(ValueError, match="leaves no root"):
        ettrl_tree(forks=2, branches=2).check(4, N)


def test_ref_cure():
    roots = np.asarray([[0.1, 0.9, 0.2, 0.5], [0.8, 0.3, 0.2, 0.1]])
    policy = FakePolicy({0: roots, 1: np.ones((2, N))})
    rows = _run(cure(top_k=1, branches=1, stage_steps=5), policy, prompts=1, group_size=4)
    # top_k = 1: the critical token is each original's highest-entropy one
    _assert_branch(rows, 2, 0, 1)
    _assert_branch(rows, 3, 1, 0)
    assert rows.generated.tolist() == [4, 4, 3, 4]
    # stage 2 (step >= stage_steps): one plain sampling call
    stage2 = FakePolicy({0: np.ones((4, N))})
    rows = _run(cure(top_k=1, branches=1, stage_steps=5), stage2, prompts=1, group_size=4, step=5)
    assert len(stage2.calls) == 1 and rows.generated.tolist() == [4, 4, 4, 4]
    # top_k = 2: the critical tokens are among the two highest-entropy ones
    policy = FakePolicy({0: np.tile(roots, (4, 1)), 1: np.ones((8, N))})
    rows = _run(cure(top_k=2, branches=1), policy, prompts=1, group_size=16)
    forks = policy.calls[1][1][:, P_LEN:].sum(axis=1)
    assert set(forks[0::2]) <= {1, 3} and set(forks[1::2]) <= {0, 1}
    with pytest.raises(ValueError, match="multiple of 1 \\+ branches = 2"):
        cure().check(5, N)


def test_aepo_fork_weights_follow_the_formula():
    entropy = np.asarray([[1.0, 1.5, 1.8, 2.5, 0.5, 1.2]])
    mask = np.ones((1, 6), bool)
    got = aepo_fork_weights(entropy, mask, np.asarray([1.0]), alpha=0.2, gamma=0.5, penalty=0.3)
    want = np.zeros(6)
    run = 0
    for t in range(1, 6):
        rise = entropy[0, t] - 1.0
        want[t] = np.clip(0.2 + 0.5 * rise, 0, 1) * max(0.0, 1 - 0.3 * run)
        run = run + 1 if rise > 0 else 0
    np.testing.assert_allclose(got[0], want)


def test_ref_aepo_branch():
    # prompt 0: H_root = 3 > later entropies -> m = round(4 sigmoid(beta * 2.x)) = 4 (no branch)
    # prompt 1: H_root = 0.1 < later -> m = 1; its 3 branches fork global row 0 where P_t > 0:
    # alpha = 0.01, gamma = 1, no penalty: P = [0, 0.01, 0.91, 0] -> position 1 or 2
    first = np.asarray([[3.0, 0.5, 0.5, 0.5]] * 4 + [[0.1, 0.1, 1.0, 0.05]] + [[0.1, 1, 1, 1]] * 3)
    policy = FakePolicy({0: first, 1: np.ones((6, N))})
    strategy = aepo_branch(beta=10.0, alpha=0.01, gamma=1.0, penalty=0.0)
    m, _ = strategy.global_count(first, np.ones((8, N), bool), 4)
    assert m.tolist() == [4, 1]
    rows = _run(strategy, policy, prompts=2, group_size=4)
    np.testing.assert_array_equal(rows.prompt, [0, 0, 0, 0, 1, 1, 1, 1])
    # the global rows kept: the first pass's rows 0-3 (prompt 0) and 4 (prompt 1)
    np.testing.assert_array_equal(
        rows.rollout.tokens[:5], 100 + 10 * np.arange(5)[:, None] + np.arange(N)
    )
    forks = policy.calls[1][1][:, P_LEN:].sum(axis=1)[3:]  # prompt 1's slots 1..3
    for m_row, fork in zip((5, 6, 7), forks, strict=True):
        _assert_branch(rows, m_row, 4, int(fork))
    assert set(forks.tolist()) <= {1, 2}
    assert rows.generated.tolist() == [4] * 5 + [N - int(f) for f in forks]


def test_build_checks_the_strategy():
    with pytest.raises(ValueError, match="rollout.group_size=4 must be a multiple of 1 \\+ forks"):
        rl.build(tiny.config(rollout={"strategy": {"name": "entropy_fork"}}), task=tiny.EvenSum())
    with pytest.raises(ValueError, match="'ppo_clip' is a objective method, not a rollout one"):
        rl.build(tiny.config(rollout={"strategy": {"name": "ppo_clip"}}), task=tiny.EvenSum())
