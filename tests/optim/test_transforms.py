"""SAM / SAR against hand-written references and optax.contrib.sam; the safe step's radius."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from entropix.optim import logit_spread, safe_step, sam, sar_optimizer


def _mlp_params(seed, d_in=5, hidden=7, classes=4):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {
        "w1": jax.random.normal(k1, (d_in, hidden)) / math.sqrt(d_in),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, classes)) / math.sqrt(hidden),
    }, jax.random.normal(k3, (16, d_in))


def _logits(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def _loss(params, x, labels):
    logp = jax.nn.log_softmax(_logits(params, x))
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


@pytest.fixture
def problem():
    params, x = _mlp_params(0)
    labels = jnp.arange(16) % 4
    return params, x, labels


def test_sam_matches_two_step_reference(problem):
    params, x, labels = problem
    lr, rho = 0.1, 0.05
    vg = lambda p: jax.value_and_grad(_loss)(p, x, labels)

    # hand-written two-step SAM on the flat parameter vector
    flat, unravel = ravel_pytree(params)
    g = np.asarray(ravel_pytree(jax.grad(_loss)(params, x, labels))[0], np.float64)
    e = rho * g / np.linalg.norm(g)
    g2 = ravel_pytree(jax.grad(_loss)(unravel(flat + e.astype(np.float32)), x, labels))[0]
    expected = np.asarray(flat) - lr * np.asarray(g2)

    tx = sam(optax.sgd(lr), rho=rho)
    state = tx.init(params)
    loss, grads = vg(params)
    updates, state = tx.update(grads, state, params, value_and_grad_fn=vg)
    got = ravel_pytree(optax.apply_updates(params, updates))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    perturbed_loss = _loss(unravel(flat + e.astype(np.float32)), x, labels)
    np.testing.assert_allclose(state.diagnostics["sam_perturbed_loss"], perturbed_loss, rtol=1e-6)

    # the same update as optax.contrib.sam in opaque mode (normalised-SGD adversary)
    ref = optax.contrib.sam(
        optax.sgd(lr),
        optax.chain(optax.contrib.normalize(), optax.sgd(rho)),
        sync_period=2,
        opaque_mode=True,
    )
    ref_updates, _ = ref.update(
        grads, ref.init(params), params, grad_fn=lambda p, _: jax.grad(_loss)(p, x, labels)
    )
    np.testing.assert_allclose(
        ravel_pytree(updates)[0], ravel_pytree(ref_updates)[0], rtol=1e-5, atol=1e-8
    )


def test_sam_composes_in_chain_and_needs_value_and_grad(problem):
    params, x, labels = problem
    vg = lambda p: jax.value_and_grad(_loss)(p, x, labels)
    tx = optax.chain(optax.clip_by_global_norm(1.0), sam(optax.adam(1e-2)))
    state = tx.init(params)
    grads = jax.grad(_loss)(params, x, labels)
    updates, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, value_and_grad_fn=vg))(
        grads, state, params
    )
    assert np.isfinite(ravel_pytree(updates)[0]).all()
    with pytest.raises(ValueError, match="value_and_grad_fn"):
        sam(optax.sgd(0.1)).update(grads, sam(optax.sgd(0.1)).init(params), params)


def test_sar_resets_to_source_when_loss_average_collapses(problem):
    params, x, labels = problem
    # an easy loss (already below the reset constant) triggers recovery on the first step
    easy = lambda p: jax.value_and_grad(lambda q: 0.01 * _loss(q, x, labels))(p)
    tx = sar_optimizer(optax.sgd(0.5, momentum=0.9), rho=0.05, reset_constant=0.2)
    state = tx.init(params)
    moved = jax.tree.map(lambda w: w + 0.1, params)
    updates, state = tx.update(easy(moved)[1], state, moved, value_and_grad_fn=easy)
    restored = optax.apply_updates(moved, updates)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-7)
    assert int(state.diagnostics["sar_resets"]) == 1
    assert np.isnan(state.diagnostics["sar_loss_ema"])
    fresh = optax.sgd(0.5, momentum=0.9).init(params)
    for a, b in zip(jax.tree.leaves(state.sam.inner), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sar_without_reset_equals_sam_and_tracks_ema(problem):
    params, x, labels = problem
    vg = lambda p: jax.value_and_grad(_loss)(p, x, labels)  # loss ~1.4 >> 0.2
    tx_sar, tx_sam = sar_optimizer(optax.sgd(0.1), momentum=0.9), sam(optax.sgd(0.1))
    s_sar, s_sam = tx_sar.init(params), tx_sam.init(params)
    p_sar = p_sam = params
    losses = []
    for _ in range(3):
        u, s_sar = tx_sar.update(vg(p_sar)[1], s_sar, p_sar, value_and_grad_fn=vg)
        p_sar = optax.apply_updates(p_sar, u)
        u, s_sam = tx_sam.update(vg(p_sam)[1], s_sam, p_sam, value_and_grad_fn=vg)
        p_sam = optax.apply_updates(p_sam, u)
        losses.append(float(s_sam.diagnostics["sam_perturbed_loss"]))
    np.testing.assert_allclose(ravel_pytree(p_sar)[0], ravel_pytree(p_sam)[0], rtol=1e-6)
    ema = losses[0]
    for loss in losses[1:]:
        ema = 0.9 * ema + 0.1 * loss
    np.testing.assert_allclose(s_sar.diagnostics["sar_loss_ema"], ema, rtol=1e-6)
    assert int(s_sar.diagnostics["sar_resets"]) == 0


def _reference_rho(params, x, update):
    """rho_a from the explicit Jacobian: pi / max_n (max_k a_nk - min_k a_nk), a = J v."""
    flat, unravel = ravel_pytree(params)
    jac = jax.jacfwd(lambda f: _logits(unravel(f), x))(flat)  # [N, K, P]
    u = np.asarray(ravel_pytree(update)[0], np.float64)
    tau = np.linalg.norm(u)
    a = np.asarray(jac, np.float64) @ (u / tau)
    return math.pi / (a.max(-1) - a.min(-1)).max(), tau


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_safe_step_never_exceeds_rho(seed, scale):
    params, x = _mlp_params(seed)
    proposal = jax.tree.map(
        lambda p, k: scale * jax.random.normal(k, p.shape),
        params,
        dict(zip(params, jax.random.split(jax.random.PRNGKey(100 + seed), 3), strict=True)),
    )
    rho, tau = _reference_rho(params, x, proposal)
    tx = safe_step()
    updates, state = jax.jit(lambda u, s, p: tx.update(u, s, p, logits_fn=lambda q: _logits(q, x)))(
        proposal, tx.init(params), params
    )
    applied = np.linalg.norm(np.asarray(ravel_pytree(updates)[0], np.float64))
    assert applied <= rho * (1 + 1e-4)
    np.testing.assert_allclose(state.diagnostics["safe_rho"], rho, rtol=1e-4)
    if tau > rho:  # scaled exactly onto the radius, direction kept
        np.testing.assert_allclose(applied, rho, rtol=1e-4)
        cos = np.dot(ravel_pytree(updates)[0], ravel_pytree(proposal)[0]) / (applied * tau)
        assert cos > 1 - 1e-5
    else:  # a safe proposal passes unchanged
        np.testing.assert_allclose(ravel_pytree(updates)[0], ravel_pytree(proposal)[0])


def test_safe_step_mask_and_ratio(problem):
    params, x, _ = problem
    proposal = jax.tree.map(lambda p: jnp.ones_like(p), params)
    logits_fn = lambda q: _logits(q, x)
    flat_dir = jax.tree.map(lambda u: u / optax.tree.norm(proposal), proposal)
    full = logit_spread(logits_fn, params, flat_dir)
    mask = jnp.arange(16) < 4
    part = logit_spread(lambda q: (logits_fn(q), mask), params, flat_dir)
    expect = logit_spread(lambda q: _logits(q, x[:4]), params, flat_dir)
    np.testing.assert_allclose(part, expect, rtol=1e-6)
    assert float(part) <= float(full)
    tx = safe_step(max_ratio=0.5)
    updates, state = tx.update(proposal, tx.init(params), params, logits_fn=logits_fn)
    rho = float(state.diagnostics["safe_rho"])
    np.testing.assert_allclose(optax.tree.norm(updates), 0.5 * rho, rtol=1e-5)
    with pytest.raises(ValueError, match="logits_fn"):
        tx.update(proposal, tx.init(params), params)
