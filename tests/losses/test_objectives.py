"""Clipped surrogate (PPO / Clip-Higher / dual-clip) and KL-to-reference estimators against
numpy references written from the formulas, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.losses import compose, kl_estimate, kl_ref, make_policy_batch, ppo_clip

B, T = 5, 8


def _arrays(seed=0, spread=0.4):
    rng = np.random.default_rng(seed)
    logp = rng.normal(-1.5, 0.5, size=(B, T)).astype(np.float32)
    old = (logp + rng.normal(0, spread, size=(B, T))).astype(np.float32)
    adv = rng.normal(size=(B, T)).astype(np.float32)
    mask = (rng.random((B, T)) > 0.2).astype(np.float32)
    return logp, old, adv, mask


def _np_ppo(logp, old, adv, eps_low, eps_high, dual):
    """Per-token loss and d loss / d logp of the clipped surrogate (float64)."""
    logp, old, adv = (np.asarray(x, np.float64) for x in (logp, old, adv))
    r = np.exp(logp - old)
    unclipped, clipped = -adv * r, -adv * np.clip(r, 1 - eps_low, 1 + eps_high)
    loss = np.maximum(unclipped, clipped)
    grad = np.where(clipped > unclipped, 0.0, -adv * r)
    if dual is not None:
        dual_active = (adv < 0) & (loss > -dual * adv)
        loss = np.where(dual_active, -dual * adv, loss)
        grad = np.where(dual_active, 0.0, grad)
    return loss, grad


def _loss_and_grad(term, logp, old, adv, mask):
    def loss(lp):
        batch = make_policy_batch(lp, jnp.asarray(adv), jnp.asarray(mask), old_logp=old)
        return compose(term)(batch)

    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(logp))
    return value, metrics, np.asarray(grad)


@pytest.mark.parametrize("dual", [None, 3.0])
def test_ref_ppo_clip(dual):
    logp, old, adv, mask = _arrays(0, spread=0.6)
    value, metrics, grad = _loss_and_grad(ppo_clip(0.2, 0.2, dual), logp, old, adv, mask)
    loss, dloss = _np_ppo(logp, old, adv, 0.2, 0.2, dual)
    n = mask.sum()
    np.testing.assert_allclose(value, (loss * mask).sum() / n, rtol=1e-5)
    np.testing.assert_allclose(grad, dloss * mask / n, rtol=1e-4, atol=1e-7)
    r = np.exp(logp.astype(np.float64) - old)
    np.testing.assert_allclose(metrics["pg/ratio_mean"], (r * mask).sum() / n, rtol=1e-5)
    clipped = -adv * np.clip(r, 0.8, 1.2) > -adv * r
    if dual is None:
        np.testing.assert_allclose(
            metrics["pg/clip_fraction"], (clipped * mask).sum() / n, rtol=1e-5
        )
        assert float(metrics["pg/dual_clip_fraction"]) == 0.0


def test_ref_dual_clip_bounds_negative_advantage_loss():
    # A < 0 with a huge ratio: plain PPO loss -A r grows without bound, dual-clip caps it at -c A.
    logp = np.zeros((1, 2), np.float32)
    old = np.full((1, 2), -3.0, np.float32)  # r = e^3 ~ 20
    adv = np.array([[-1.0, 1.0]], np.float32)
    mask = np.ones((1, 2), np.float32)
    value, metrics, grad = _loss_and_grad(ppo_clip(0.2, 0.28, 3.0), logp, old, adv, mask)
    r = np.exp(3.0)
    np.testing.assert_allclose(value, (3.0 + -1.0 * 1.28) / 2, rtol=1e-5)
    np.testing.assert_allclose(metrics["pg/dual_clip_fraction"], 0.5)
    np.testing.assert_allclose(grad, [[0.0, 0.0]], atol=1e-7)
    value_no_dual, _, grad_no_dual = _loss_and_grad(ppo_clip(0.2, 0.28, None), logp, old, adv, mask)
    np.testing.assert_allclose(value_no_dual, (r - 1.28) / 2, rtol=1e-5)
    np.testing.assert_allclose(grad_no_dual, [[r / 2, 0.0]], rtol=1e-5)


def test_ref_clip_higher():
    # Token with A > 0 and r = 1.25: clipped (no gradient) at eps_high 0.2, free at 0.28 (DAPO).
    logp = np.log(np.array([[1.25, 0.75]], np.float32))
    old = np.zeros((1, 2), np.float32)
    adv = np.array([[1.0, -1.0]], np.float32)
    mask = np.ones((1, 2), np.float32)
    _, _, grad_sym = _loss_and_grad(ppo_clip(0.2, 0.2, None), logp, old, adv, mask)
    _, _, grad_high = _loss_and_grad(ppo_clip(0.2, 0.28, None), logp, old, adv, mask)
    np.testing.assert_allclose(grad_sym, [[0.0, 0.0]], atol=1e-7)  # both outside [0.8, 1.2]
    np.testing.assert_allclose(grad_high, [[-1.25 / 2, 0.0]], rtol=1e-5)  # low side unchanged
    logp, old, adv, mask = _arrays(1, spread=0.5)
    value, _, grad = _loss_and_grad(ppo_clip(), logp, old, adv, mask)
    loss, dloss = _np_ppo(logp, old, adv, 0.2, 0.28, 3.0)
    np.testing.assert_allclose(value, (loss * mask).sum() / mask.sum(), rtol=1e-5)
    np.testing.assert_allclose(grad, dloss * mask / mask.sum(), rtol=1e-4, atol=1e-7)


def test_ppo_clip_bad_arguments():
    with pytest.raises(ValueError, match="eps_low must be > 0"):
        ppo_clip(eps_low=0.0)
    with pytest.raises(ValueError, match="eps_low must be < 1"):
        ppo_clip(eps_low=1.0)
    with pytest.raises(ValueError, match="eps_high must be > 0"):
        ppo_clip(eps_high=-0.1)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        ppo_clip(dual_clip=0.5)


def _np_kl(logp, ref, estimator):
    d = np.asarray(ref, np.float64) - np.asarray(logp, np.float64)
    value = {"k1": -d, "k2": 0.5 * d**2, "k3": np.exp(d) - 1 - d}[estimator]
    grad = {"k1": np.ones_like(d), "k2": -d, "k3": 1 - np.exp(d)}[estimator]
    return value, grad


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_ref_kl_ref(estimator):
    logp, ref, _, mask = _arrays(2, spread=0.7)
    np.testing.assert_allclose(
        kl_estimate(logp, ref, estimator), _np_kl(logp, ref, estimator)[0], rtol=1e-5, atol=1e-6
    )

    def loss(lp):
        batch = make_policy_batch(lp, jnp.zeros(B), jnp.asarray(mask), ref_logp=jnp.asarray(ref))
        return compose(kl_ref(coef=0.04, estimator=estimator))(batch)

    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(logp))
    v, g = _np_kl(logp, ref, estimator)
    n = mask.sum()
    np.testing.assert_allclose(metrics["kl_ref/loss"], (v * mask).sum() / n, rtol=1e-5)
    np.testing.assert_allclose(value, 0.04 * (v * mask).sum() / n, rtol=1e-5)
    np.testing.assert_allclose(grad, 0.04 * g * mask / n, rtol=1e-4, atol=1e-8)


def test_kl_estimators_are_unbiased_or_bounded_as_documented():
    # Samples from p, reference q: E_p[k1] = E_p[k3] = KL(p || q); k2, k3 >= 0 pointwise.
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.5, 0.3])
    kl = float(np.sum(p * np.log(p / q)))
    logp, ref = np.log(p)[None].astype(np.float32), np.log(q)[None].astype(np.float32)
    for est in ("k1", "k3"):
        np.testing.assert_allclose(
            np.sum(p * np.asarray(kl_estimate(logp, ref, est))[0]), kl, rtol=1e-5
        )
    for est in ("k2", "k3"):
        assert np.all(np.asarray(kl_estimate(logp, ref, est)) >= 0)


def test_kl_ref_errors():
    with pytest.raises(ValueError, match="estimator='k4' is not one of"):
        kl_ref(estimator="k4")
    with pytest.raises(ValueError, match="coef must be > 0"):
        kl_ref(coef=0.0)
    batch = make_policy_batch(jnp.zeros((2, 3)), jnp.ones(2))
    with pytest.raises(ValueError, match=r"kl_ref needs PolicyBatch\.ref_logp"):
        compose(kl_ref())(batch)
