"""Controllers drive a toy softmax policy's entropy; EPO history against a numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.entropy import shannon_entropy
from entropix.optim import (
    AdaptiveEntropyCoef,
    AEPOTemperature,
    Controller,
    EntropyAnchor,
    EntropyHistory,
)

K = 8
REWARD = jnp.linspace(0.0, 1.0, K)  # a bandit whose greedy policy has zero entropy


def _run(controller, loss_of, steps=1500, lr=0.5):
    """SGD on the logits of a K-armed softmax policy; the controller sees H each step."""

    def step(carry, _):
        theta, cstate = carry
        controls = controller.controls(cstate)
        grads = jax.grad(loss_of)(theta, controls)
        theta = theta - lr * grads
        h = shannon_entropy(theta)
        return (theta, controller.update(cstate, h)), h

    (_, cstate), entropies = jax.jit(
        lambda: jax.lax.scan(step, (jnp.zeros(K), controller.init()), None, length=steps)
    )()
    return np.asarray(entropies), cstate


def _bonus_loss(theta, controls):
    probs = jax.nn.softmax(theta)
    return -jnp.sum(probs * REWARD) - controls["entropy_coef"] * shannon_entropy(theta)


@pytest.mark.parametrize("target", [0.7, 1.4])
def test_entropy_coef_reaches_target(target):
    controller = AdaptiveEntropyCoef(target=target, lr=0.05, init_coef=1e-3)
    assert isinstance(controller, Controller)
    entropies, state = _run(controller, _bonus_loss)
    assert abs(entropies[-200:].mean() - target) < 0.02
    assert np.all(np.abs(entropies[-50:] - target) < 0.05)
    assert int(state.count) == 1500


def test_entropy_coef_band_holds_entropy_inside():
    controller = AdaptiveEntropyCoef(band=(0.9, 1.2), lr=0.05, init_coef=1e-3)
    entropies, _ = _run(controller, _bonus_loss)
    assert np.all((entropies[-100:] > 0.9 - 0.03) & (entropies[-100:] < 1.2 + 0.03))


def test_entropy_coef_update_rule_and_clip():
    c = AdaptiveEntropyCoef(target=1.0, lr=0.1, init_coef=0.01, min_coef=1e-3, max_coef=0.02)
    s = c.update(c.init(), 0.5)  # log a += 0.1 * 0.5
    np.testing.assert_allclose(c.controls(s)["entropy_coef"], 0.01 * np.exp(0.05), rtol=1e-6)
    for _ in range(100):
        s = c.update(s, 0.0)
    np.testing.assert_allclose(c.controls(s)["entropy_coef"], 0.02, rtol=1e-6)
    band = AdaptiveEntropyCoef(band=(1.0, 2.0), lr=1.0)
    np.testing.assert_allclose([band.error(h) for h in (0.5, 1.5, 2.5)], [0.5, 0.0, -0.5])


def test_entropy_coef_bad_config():
    with pytest.raises(ValueError, match="exactly one of target"):
        AdaptiveEntropyCoef()
    with pytest.raises(ValueError, match="band"):
        AdaptiveEntropyCoef(band=(2.0, 1.0))
    with pytest.raises(ValueError, match="lr"):
        AdaptiveEntropyCoef(target=1.0, lr=0.0)


def _aepo_loss(theta, controls, coef=3.0):
    """Expected reward plus AEPO's REINFORCE term on pi^T (exact expectation, R = 1)."""
    probs = jax.nn.softmax(theta)
    tempered = jax.lax.stop_gradient(jax.nn.softmax(theta / controls["aepo_temperature"]))
    return -jnp.sum(probs * REWARD) - coef * jnp.sum(tempered * jax.nn.log_softmax(theta))


@pytest.mark.parametrize("target", [0.8, 1.5])
def test_aepo_temperature_holds_entropy_at_target(target):
    controller = AEPOTemperature(target=target)
    entropies, state = _run(controller, _aepo_loss, steps=800, lr=0.2)
    assert abs(entropies[-200:].mean() - target) < 0.05
    assert np.all(np.abs(entropies[-200:] - target) < 0.1)
    assert np.isclose(controller.temperature(state), [0.8, 1.2]).any()


def test_aepo_temperature_switch():
    c = AEPOTemperature(target=0.5, t_high=1.2, t_low=0.8, smoothing=0.5)
    s = c.init()
    assert float(c.controls(s)["aepo_temperature"]) == 1.0  # no observation yet
    s = c.update(s, 0.2)
    assert float(c.temperature(s)) == pytest.approx(1.2)
    s = c.update(s, 1.0)  # smoothed: 0.5 * 0.2 + 0.5 * 1.0 = 0.6 > 0.5
    np.testing.assert_allclose(s.entropy, 0.6, rtol=1e-6)
    assert float(c.temperature(s)) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="t_low <= t_high"):
        AEPOTemperature(t_low=1.5, t_high=1.2)


@pytest.mark.parametrize("window", [None, 3])
def test_entropy_history_matches_numpy(window):
    rng = np.random.default_rng(0)
    values = rng.uniform(0.1, 2.0, size=7).astype(np.float32)
    hist = EntropyHistory(window=window)
    state = hist.init()
    assert float(hist.controls(state)["entropy_hist_count"]) == 0
    assert float(hist.controls(state)["entropy_hist_mean"]) == 0.0
    update = jax.jit(hist.update)
    for k, v in enumerate(values, start=1):
        state = update(state, v)
        seen = values[:k] if window is None else values[max(0, k - window) : k]
        controls = hist.controls(state)
        np.testing.assert_allclose(controls["entropy_hist_mean"], seen.mean(), rtol=1e-6)
        assert float(controls["entropy_hist_count"]) == k


def test_entropy_history_initial_seed():
    hist = EntropyHistory(initial=1.5)
    state = hist.update(hist.init(), 0.5)
    np.testing.assert_allclose(hist.controls(state)["entropy_hist_mean"], 1.0)
    with pytest.raises(ValueError, match="window"):
        EntropyHistory(window=0)


def test_entropy_anchor_keeps_the_first_finite_observation():
    anchor = EntropyAnchor()
    state = anchor.init()
    assert np.isnan(float(anchor.controls(state)["entropy_anchor"]))
    update = jax.jit(anchor.update)
    for bad in (jnp.nan, jnp.inf):  # a non-finite first observation does not set it
        state = update(state, bad)
    assert np.isnan(float(anchor.controls(state)["entropy_anchor"]))
    for value in (0.75, 0.2, 1.9):
        state = update(state, value)
        assert float(anchor.controls(state)["entropy_anchor"]) == pytest.approx(0.75)
