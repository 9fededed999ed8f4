import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.dynamics import (
    batch_predicted_entropy_change,
    pg_logit_update,
    predicted_entropy_change,
    predicted_entropy_change_pg,
    token_covariance,
)


def _np_entropy(z):
    p = np.exp(z - z.max())
    p /= p.sum()
    return -(p * np.log(p)).sum()


def _np_predicted(z, dz):
    p = np.exp(z - z.max())
    p /= p.sum()
    logp = np.log(p)
    return -(p * (logp - p @ logp) * (dz - p @ dz)).sum()


def test_predicted_matches_numpy_covariance():
    rng = np.random.default_rng(0)
    z, dz = rng.normal(size=(4, 7)), rng.normal(size=(4, 7))
    got = predicted_entropy_change(jnp.asarray(z, jnp.float32), jnp.asarray(dz, jnp.float32))
    want = [_np_predicted(z[i], dz[i]) for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("natural", [False, True])
def test_first_order_error_vanishes_on_tabular_bandit(natural):
    rng = np.random.default_rng(1)
    z, r = rng.normal(size=8), rng.random(8)
    p = np.exp(z) / np.exp(z).sum()
    errors = []
    for lr in (0.1, 0.01, 0.001):
        adv = r - p @ r
        dz = lr * adv if natural else lr * p * adv  # numpy reference of the PG step
        exact = _np_entropy(z + dz) - _np_entropy(z)
        pred = float(predicted_entropy_change_pg(jnp.asarray(z), jnp.asarray(r), lr, natural))
        np.testing.assert_allclose(
            pg_logit_update(jnp.asarray(z), jnp.asarray(r), lr, natural), dz, rtol=1e-5
        )
        errors.append(abs(pred - exact) / abs(exact))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 1e-2


def test_likely_good_action_lowers_entropy_rare_good_action_raises_it():
    z = jnp.log(jnp.array([0.7, 0.2, 0.1]))
    assert predicted_entropy_change_pg(z, jnp.array([1.0, 0.0, 0.0]), 0.1) < 0
    assert predicted_entropy_change_pg(z, jnp.array([0.0, 0.0, 1.0]), 0.1) > 0


def test_token_covariance_and_batch_estimate_vs_numpy():
    rng = np.random.default_rng(2)
    logp = -rng.random((3, 5)).astype(np.float32)
    adv = rng.normal(size=(3, 1)).astype(np.float32)
    mask = rng.random((3, 5)) > 0.3
    a = np.broadcast_to(adv, (3, 5))
    cov = (logp - logp[mask].mean()) * (a - a[mask].mean()) * mask
    np.testing.assert_allclose(token_covariance(logp, adv, mask), cov, rtol=1e-5, atol=1e-6)
    got = batch_predicted_entropy_change(logp, adv, mask, lr=0.5)
    np.testing.assert_allclose(got, -0.5 * cov[mask].mean(), rtol=1e-5, atol=1e-7)
    assert jax.jit(batch_predicted_entropy_change)(logp, adv, mask).shape == ()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="logit_update must have the shape"):
        predicted_entropy_change(jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(TypeError, match="logits must be a floating"):
        predicted_entropy_change(jnp.zeros(3, jnp.int32), jnp.zeros(3))
    with pytest.raises(ValueError, match="mask"):
        token_covariance(jnp.zeros((2, 3)), jnp.zeros((2, 1)), jnp.ones((2, 4), bool))
