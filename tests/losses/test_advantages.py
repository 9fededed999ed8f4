"""Group-relative advantage shapers against per-group numpy/scipy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm, rankdata

from entropix.losses import (
    dr_grpo_advantages,
    g2rpo_advantages,
    grpo_advantages,
    rloo_advantages,
)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    # Non-contiguous, unequal groups (sizes 4, 3, 1, 5); some ties inside groups.
    group_ids = np.array([7, 2, 7, 2, 9, 7, 2, 7, 5, 5, 5, 5, 5], np.int32)
    rewards = rng.integers(0, 3, size=group_ids.size).astype(np.float32)
    rewards[8:] = rng.normal(size=5)
    return rewards, group_ids


def _per_group(rewards, group_ids, fn):
    out = np.zeros(rewards.size)
    for g in np.unique(group_ids):
        idx = np.flatnonzero(group_ids == g)
        out[idx] = fn(rewards[idx].astype(np.float64)) if idx.size > 1 else 0.0
    return out


def test_ref_grpo():
    r, g = _data()
    want = _per_group(r, g, lambda x: (x - x.mean()) / (x.std(ddof=1) + 1e-6))
    np.testing.assert_allclose(grpo_advantages(r, g), want, rtol=1e-5, atol=1e-5)
    # Gradient w.r.t. rewards, numpy finite differences of the reference (float64).
    eps, x = 1e-5, np.random.default_rng(1).normal(size=6)
    gid = np.array([0, 0, 0, 1, 1, 1], np.int32)

    def ref(v):
        return _per_group(v, gid, lambda y: (y - y.mean()) / (y.std(ddof=1) + 1e-6))

    numeric = np.stack([(ref(x + eps * e) - ref(x - eps * e)) / (2 * eps) for e in np.eye(6)], 1)
    jac = jax.jacobian(grpo_advantages)(jnp.asarray(x, jnp.float32), gid)
    np.testing.assert_allclose(jac, numeric, rtol=2e-3, atol=2e-3)


def test_ref_dr_grpo():
    r, g = _data(1)
    want = _per_group(r, g, lambda x: x - x.mean())
    np.testing.assert_allclose(dr_grpo_advantages(r, g), want, rtol=1e-5, atol=1e-6)
    jac = jax.jacobian(dr_grpo_advantages)(jnp.asarray(r), g)  # I - S / n_g (linear map)
    same = (g[:, None] == g[None, :]).astype(np.float64)
    np.testing.assert_allclose(jac, np.eye(g.size) - same / same.sum(1, keepdims=True), atol=1e-6)


def test_ref_rloo():
    r, g = _data(2)
    want = _per_group(r, g, lambda x: x - (x.sum() - x) / (x.size - 1))
    np.testing.assert_allclose(rloo_advantages(r, g), want, rtol=1e-5, atol=1e-6)
    want_scaled = _per_group(r, g, lambda x: x.size / (x.size - 1) * (x - x.mean()))
    np.testing.assert_allclose(rloo_advantages(r, g), want_scaled, rtol=1e-5, atol=1e-6)
    jac = jax.jacobian(rloo_advantages)(jnp.asarray(r), g)
    same = (g[:, None] == g[None, :]).astype(np.float64)
    n = same.sum(1, keepdims=True)
    ref = np.where(n > 1, np.eye(g.size) - (same - np.eye(g.size)) / np.maximum(n - 1, 1), 0.0)
    np.testing.assert_allclose(jac, ref, atol=1e-6)


def test_ref_g2rpo():
    r, g = _data(3)

    def normal_scores(x):
        scores = norm.ppf((rankdata(x, method="ordinal") - 0.5) / x.size)
        return np.array([scores[x == v].mean() for v in x])  # ties share their mean score

    want = _per_group(r, g, normal_scores)
    distinct = np.array([0.3, -1.0, 2.0, 0.1], np.float32)
    np.testing.assert_allclose(
        g2rpo_advantages(distinct, np.zeros(4, np.int32)),
        norm.ppf((rankdata(distinct) - 0.5) / 4),
        rtol=1e-5,
    )
    np.testing.assert_allclose(g2rpo_advantages(r, g), want, rtol=1e-4, atol=1e-5)
    # Invariants: zero-sum and symmetric per group; all-equal group -> 0; monotone transform
    # of the rewards leaves the advantages unchanged; gradient w.r.t. rewards is zero (ranks).
    adv = np.asarray(g2rpo_advantages(r, g))
    for gid in np.unique(g):
        np.testing.assert_allclose(adv[g == gid].sum(), 0.0, atol=1e-5)
    np.testing.assert_allclose(g2rpo_advantages(jnp.ones(4), jnp.zeros(4, jnp.int32)), 0.0)
    np.testing.assert_allclose(g2rpo_advantages(np.exp(r) * 3 + 1, g), adv, atol=1e-6)
    jac = jax.jacobian(g2rpo_advantages)(jnp.asarray(r), g)
    np.testing.assert_array_equal(jac, 0.0)


def test_jitted_shapers_match_the_numpy_references_and_share_group_convention():
    r, g = _data(4)
    references = {
        grpo_advantages: lambda x: (x - x.mean()) / (x.std(ddof=1) + 1e-6),
        dr_grpo_advantages: lambda x: x - x.mean(),
        rloo_advantages: lambda x: x - (x.sum() - x) / (x.size - 1),
    }
    for fn, ref in references.items():
        np.testing.assert_allclose(jax.jit(fn)(r, g), _per_group(r, g, ref), rtol=1e-5, atol=1e-5)
    for fn in (*references, g2rpo_advantages):
        assert float(jax.jit(fn)(r, g)[g == 9][0]) == 0.0  # singleton group


@pytest.mark.parametrize(
    "fn", [grpo_advantages, dr_grpo_advantages, rloo_advantages, g2rpo_advantages]
)
def test_shaper_bad_input(fn):
    r, g = _data()
    with pytest.raises(TypeError, match="group_ids must be integer"):
        fn(r, g.astype(np.float32))
    with pytest.raises(ValueError, match="group_ids must have shape"):
        fn(r, g[:-1])
    with pytest.raises(TypeError, match="rewards must be a floating"):
        fn(r.astype(np.int32), g)
    with pytest.raises(ValueError, match="rewards must have rank 1"):
        fn(r[None], g)
