"""HL-Gauss value loss and the entropy-guided attention regulariser vs numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from entropix.losses.attention_reg import attention_entropy_reg
from entropix.losses.hl_gauss import hl_gauss, hl_gauss_transform
from entropix.losses.registry import REGISTRY


def directional_fd(f, x, seed=1, eps=1e-3):
    """(f(x + eps v) - f(x - eps v)) / 2 eps and grad(f)(x) . v for a random direction v."""
    v = np.random.default_rng(seed).normal(size=np.shape(x)).astype(np.float32)
    fd = (float(f(x + eps * v)) - float(f(x - eps * v))) / (2 * eps)
    return fd, float(jnp.vdot(jax.grad(f)(jnp.asarray(x)), v))


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# ---- HL-Gauss -----------------------------------------------------------------------------


def np_hl_gauss_probs(y, lo, hi, bins, sigma):
    edges = np.linspace(lo, hi, bins + 1)
    y = np.clip(np.asarray(y, np.float64), lo, hi)[..., None]
    cdf = norm.cdf((edges - y) / sigma)
    return np.diff(cdf, axis=-1) / (cdf[..., -1:] - cdf[..., :1])


def test_ref_hl_gauss():
    lo, hi, bins = -2.0, 3.0, 21
    sigma = 0.75 * (hi - lo) / bins
    rng = np.random.default_rng(0)
    targets = rng.uniform(-2.5, 3.5, size=(4, 5)).astype(np.float32)  # some outside the support
    logits = rng.normal(size=(4, 5, bins)).astype(np.float32)
    mask = (rng.uniform(size=(4, 5)) > 0.3).astype(np.float32)
    to_probs, to_scalar = hl_gauss_transform(lo, hi, bins)
    np.testing.assert_allclose(
        to_probs(targets), np_hl_gauss_probs(targets, lo, hi, bins, sigma), rtol=1e-4, atol=1e-6
    )
    centres = (np.linspace(lo, hi, bins + 1)[:-1] + np.linspace(lo, hi, bins + 1)[1:]) / 2
    np.testing.assert_allclose(
        to_scalar(logits), np.exp(np_log_softmax(logits)) @ centres, rtol=1e-5, atol=1e-5
    )
    loss, metrics = hl_gauss(lo, hi, bins)(logits, targets, mask)
    ce = -np.sum(np_hl_gauss_probs(targets, lo, hi, bins, sigma) * np_log_softmax(logits), -1)
    np.testing.assert_allclose(loss, np.sum(ce * mask) / mask.sum(), rtol=1e-5)
    value = np.exp(np_log_softmax(logits)) @ centres
    np.testing.assert_allclose(
        metrics["value_error"], np.sum(np.abs(value - targets) * mask) / mask.sum(), rtol=1e-5
    )
    fd, analytic = directional_fd(lambda z: hl_gauss(lo, hi, bins)(z, targets, mask)[0], logits)
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=1e-4)


def test_hl_gauss_gradients_are_exact_and_safe_at_minus_inf():
    """d loss / dz = mask (softmax(z) - q) / sum(mask) (the custom JVP, against numpy), in
    reverse and forward mode; the predicted value's gradient is that of to_scalar; a -inf logit
    where q = 0 is harmless."""
    lo, hi, bins = -1.0, 1.0, 11
    sigma = 0.75 * (hi - lo) / bins
    rng = np.random.default_rng(3)
    targets = rng.uniform(-0.9, 0.9, size=(3, 4)).astype(np.float32)
    logits = rng.normal(size=(3, 4, bins)).astype(np.float32)
    mask = (rng.uniform(size=(3, 4)) > 0.3).astype(np.float32)
    loss_fn = hl_gauss(lo, hi, bins)
    grad = jax.grad(lambda z: loss_fn(z, targets, mask)[0])(logits)
    q = np_hl_gauss_probs(targets, lo, hi, bins, sigma)
    want = q.sum(-1, keepdims=True) * np.exp(np_log_softmax(logits)) - q
    np.testing.assert_allclose(grad, want * mask[..., None] / mask.sum(), rtol=1e-4, atol=1e-7)
    tangent = rng.normal(size=logits.shape).astype(np.float32)
    _, forward = jax.jvp(lambda z: loss_fn(z, targets, mask)[0], (logits,), (tangent,))
    np.testing.assert_allclose(forward, np.sum(grad * tangent), rtol=1e-5, atol=1e-8)
    _, to_scalar = hl_gauss_transform(lo, hi, bins)
    value_grad = jax.grad(lambda z: loss_fn(z, targets)[1]["value"])(logits)
    np.testing.assert_allclose(
        value_grad, jax.grad(lambda z: jnp.mean(to_scalar(z)))(logits), rtol=1e-5, atol=1e-8
    )
    far = logits.copy()
    far[..., 0] = -np.inf  # bin 0 gets q = 0 (targets are far from -1)
    value, far_grad = jax.value_and_grad(lambda z: loss_fn(z, np.full((3, 4), 0.9))[0])(far)
    assert np.isfinite(value) and np.all(np.isfinite(far_grad)) and np.all(far_grad[..., 0] == 0)


def test_hl_gauss_histogram_invariants():
    to_probs, to_scalar = hl_gauss_transform(0.0, 10.0, 51)
    y = jnp.linspace(1.0, 9.0, 17)
    probs = to_probs(y)
    np.testing.assert_allclose(jnp.sum(probs, -1), 1.0, rtol=1e-5)
    assert bool(jnp.all(probs >= 0))
    # Away from the edges the histogram's mean is the target (the Gaussian is symmetric).
    np.testing.assert_allclose(to_scalar(jnp.log(probs)), y, atol=2e-3)
    # The loss is minimised by predicting the target histogram itself.
    loss_fn = hl_gauss(0.0, 10.0, 51)
    best, _ = loss_fn(jnp.log(probs), y)
    worse, _ = loss_fn(jnp.log(probs) + jax.random.normal(jax.random.key(0), probs.shape), y)
    assert float(best) < float(worse)
    edge = to_probs(jnp.array([25.0]))  # clipped to the support's top edge
    np.testing.assert_allclose(edge, to_probs(jnp.array([10.0])))


def test_hl_gauss_bad_input():
    with pytest.raises(ValueError, match="max_value must exceed"):
        hl_gauss_transform(1.0, 1.0, 10)
    with pytest.raises(ValueError, match="num_bins must be an int"):
        hl_gauss(0.0, 1.0, 1)
    loss_fn = hl_gauss(0.0, 1.0, 8)
    with pytest.raises(ValueError, match="logits must have shape"):
        loss_fn(jnp.zeros((3, 7)), jnp.zeros(3))
    with pytest.raises(ValueError, match="mask has shape"):
        loss_fn(jnp.zeros((3, 8)), jnp.zeros(3), jnp.ones(4))


# ---- entropy-guided attention regulariser -------------------------------------------------


def np_attention_reg(entropy, weights, mask, n, coef=1e-5, tol=0.2):
    h_max = math.log(n)
    dev = entropy - weights[:, None, :, None] * h_max
    pen = np.where(np.abs(dev) > tol * h_max, dev**2, 0.0) * mask[None, :, None, :]
    return coef * pen.sum(axis=(1, 3)).mean()


def test_ref_attention_entropy_reg():
    rng = np.random.default_rng(0)
    layers, b, h, t = 2, 3, 4, 6
    entropy = rng.uniform(0.0, math.log(t), size=(layers, b, h, t)).astype(np.float32)
    weights = rng.uniform(0.2, 0.9, size=(layers, h)).astype(np.float32)
    mask = (rng.uniform(size=(b, t)) > 0.25).astype(np.float32)
    loss_fn = attention_entropy_reg()
    loss, metrics = loss_fn(entropy, weights, mask)
    np.testing.assert_allclose(loss, np_attention_reg(entropy, weights, mask, t), rtol=1e-5)
    dev = entropy - weights[:, None, :, None] * math.log(t)
    outside = (np.abs(dev) > 0.2 * math.log(t)) * mask[None, :, None, :]
    assert 0 < outside.sum() < mask.sum() * layers * h  # the tolerance band bites
    np.testing.assert_allclose(
        metrics["outside_fraction"], outside.sum() / (mask.sum() * layers * h), rtol=1e-6
    )
    # One layer without the layer axis is the same formula with L = 1.
    one, _ = loss_fn(entropy[0], weights[0], mask)
    np.testing.assert_allclose(one, np_attention_reg(entropy[:1], weights[:1], mask, t), rtol=1e-5)
    # Gradients w.r.t. both the entropies and the learnable thresholds.
    fd, analytic = directional_fd(lambda e: loss_fn(e, weights, mask)[0] * 1e5, entropy)
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=1e-3)
    fd, analytic = directional_fd(lambda w: loss_fn(entropy, w, mask)[0] * 1e5, weights)
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=1e-3)


def test_attention_reg_from_probabilities_matches_entropy_input():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(2, 3, 2, 5, 7)) * 2
    probs = np.exp(np_log_softmax(scores)).astype(np.float32)
    entropy = -np.sum(probs * np.log(probs), -1).astype(np.float32)
    weights = np.full((2, 2), 0.6, np.float32)
    got, _ = attention_entropy_reg(from_probs=True)(probs, weights)
    want, _ = attention_entropy_reg()(entropy, weights, num_keys=7)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(
        got, np_attention_reg(entropy, weights, np.ones((3, 5)), 7), rtol=1e-4
    )
    single, _ = attention_entropy_reg(from_probs=True)(probs[0], weights[0])
    np.testing.assert_allclose(
        single, np_attention_reg(entropy[:1], weights[:1], np.ones((3, 5)), 7), rtol=1e-4
    )


def test_attention_reg_zero_inside_band_and_bad_input():
    loss_fn = attention_entropy_reg()
    entropy = jnp.full((2, 3, 4), 0.5 * math.log(4))
    loss, _ = loss_fn(entropy, jnp.full((3,), 0.5))
    assert float(loss) == 0.0
    with pytest.raises(ValueError, match="threshold_weights must have shape"):
        loss_fn(entropy, jnp.full((2,), 0.5))
    with pytest.raises(ValueError, match="rank 3 or 4"):
        loss_fn(entropy[0], jnp.full((3,), 0.5))
    with pytest.raises(ValueError, match="mask has shape"):
        loss_fn(entropy, jnp.full((3,), 0.5), jnp.ones((2, 5)))


def test_auxiliary_methods_are_registered():
    for key in ("hl_gauss", "attention_entropy_reg"):
        assert REGISTRY[key].kind == "auxiliary"
        assert "Formula:" in REGISTRY[key].doc and "Defaults:" in REGISTRY[key].doc
