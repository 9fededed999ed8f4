import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entropix.entropy import AGGREGATION_MODES, aggregate, masked_mean, masked_sum, masked_var

RNG = np.random.default_rng(1)
VALUES = RNG.normal(size=(4, 7)).astype(np.float32)
MASK = RNG.random((4, 7)) > 0.4
MASK[2] = False  # one padding-only row


def numpy_aggregate(x, m, mode, norm=None):
    """Written from the formulas in entropix.entropy.reductions' docstring, loops on purpose."""
    x, m = np.asarray(x, np.float64), np.asarray(m, np.float64)
    if mode == "token-mean":
        return (x * m).sum() / m.sum()
    rows = [b for b in range(x.shape[0]) if m[b].sum() > 0]
    per_seq = []
    for b in rows:
        s = (x[b] * m[b]).sum()
        if mode == "seq-mean-token-mean":
            per_seq.append(s / m[b].sum())
        elif mode == "seq-mean-token-sum":
            per_seq.append(s)
        else:
            per_seq.append(s / (x.shape[1] if norm is None else norm))
    return float(np.mean(per_seq))


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregate_matches_numpy(mode):
    np.testing.assert_allclose(
        aggregate(VALUES, MASK, mode), numpy_aggregate(VALUES, MASK, mode), rtol=1e-6
    )


def test_norm_constant_is_used():
    got = aggregate(VALUES, MASK, "seq-mean-token-sum-norm", norm=100.0)
    np.testing.assert_allclose(
        got, numpy_aggregate(VALUES, MASK, "seq-mean-token-sum-norm", 100.0), rtol=1e-6
    )


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(AGGREGATION_MODES), st.integers(0, 2**31 - 1))
def test_masked_positions_are_ignored(mode, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    m = rng.random((3, 6)) > 0.5
    garbage = np.where(m, x, rng.normal(size=x.shape) * 1e6).astype(np.float32)
    np.testing.assert_allclose(aggregate(garbage, m, mode), aggregate(x, m, mode), rtol=1e-6)


def test_empty_mask_gives_zero_not_nan():
    zeros = np.zeros((2, 3), bool)
    for mode in AGGREGATION_MODES:
        assert float(aggregate(VALUES[:2, :3], zeros, mode)) == 0.0
    assert float(masked_mean(VALUES[:2, :3], zeros)) == 0.0
    g = jax.grad(lambda v: aggregate(v, zeros, "token-mean"))(jnp.asarray(VALUES[:2, :3]))
    assert np.all(np.isfinite(g))


def test_masked_helpers():
    m = MASK.astype(np.float64)
    np.testing.assert_allclose(masked_sum(VALUES, MASK), (VALUES * m).sum(), rtol=1e-6)
    with np.errstate(invalid="ignore"):  # row 2 is fully masked: 0/0 in the reference
        expected_rows = ((VALUES * m).sum(1) / m.sum(1))[[0, 1, 3]]
    np.testing.assert_allclose(
        np.asarray(masked_mean(VALUES, MASK, axis=1))[[0, 1, 3]],
        expected_rows,
        rtol=1e-5,
        atol=1e-6,
    )
    valid = VALUES[MASK]
    np.testing.assert_allclose(masked_var(VALUES, MASK), valid.var(), rtol=1e-5)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="aggregate mode='mean' is not one of"):
        aggregate(VALUES, MASK, "mean")
    with pytest.raises(ValueError, match=r"mask has shape \(4, 6\) but must match"):
        aggregate(VALUES, MASK[:, :6])
    with pytest.raises(ValueError, match="values must have rank 2"):
        aggregate(VALUES[0], MASK[0])
    with pytest.raises(TypeError, match="mask must be bool or floating"):
        masked_mean(VALUES, MASK.astype(np.int32))
