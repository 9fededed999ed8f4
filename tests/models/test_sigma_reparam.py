"""sigmaReparam: spectral-norm estimate vs SVD, gradient isolation, train/eval, config switch."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entropix.models import (
    Llama,
    MLPClassifier,
    PowerIterate,
    SigmaReparamLinear,
    get_preset,
    spectral_state,
)


def _layer(seed=0, d_in=12, d_out=7):
    return SigmaReparamLinear(d_in, d_out, rngs=nnx.Rngs(seed))


def test_sigma_estimate_converges_to_the_spectral_norm():
    layer = _layer()
    x = jnp.ones((2, 12))
    for _ in range(60):
        layer(x)  # each training forward takes one power-iteration step
    true_sigma = np.linalg.svd(np.asarray(layer.kernel[...]), compute_uv=False)[0]
    np.testing.assert_allclose(float(layer.sigma()), true_sigma, rtol=1e-4)
    w_hat = np.asarray(layer.effective_kernel())
    np.testing.assert_allclose(np.linalg.svd(w_hat, compute_uv=False)[0], 1.0, rtol=1e-4)


def test_output_is_gamma_over_sigma_times_w():
    layer = _layer(seed=1)
    layer.gamma[...] = jnp.asarray(2.5)
    layer.eval()
    x = jax.random.normal(jax.random.key(0), (3, 12))
    w = np.asarray(layer.kernel[...], np.float64)
    u, v = np.asarray(layer.u[...], np.float64), np.asarray(layer.v[...], np.float64)
    want = np.asarray(x, np.float64) @ (2.5 / (v @ w @ u) * w)
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-6)


def test_no_gradient_flows_through_power_iteration_state():
    layer = _layer(seed=2)
    x = jax.random.normal(jax.random.key(1), (4, 12))
    loss = lambda m: jnp.sum(m(x) ** 2)
    for mode in ("train", "eval"):
        getattr(layer, mode)()
        grads = nnx.grad(loss, argnums=nnx.DiffState(0, PowerIterate))(layer)
        assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads))
    # the kernel gradient is that of gamma * x W / (v^T W u) with u, v held constant
    layer.eval()
    u, v, gamma = layer.u[...], layer.v[...], layer.gamma[...]
    fixed = lambda w: jnp.sum((x @ (gamma / (v @ w @ u) * w)) ** 2)
    grads = nnx.grad(loss)(layer)
    np.testing.assert_allclose(grads.kernel[...], jax.grad(fixed)(layer.kernel[...]), rtol=1e-4)
    # power-iteration vectors are not Params: an optimiser never sees them
    assert not any(
        isinstance(v, PowerIterate) for _, v in nnx.to_flat_state(nnx.state(layer, nnx.Param))
    )


def test_train_mode_updates_u_v_and_eval_mode_does_not():
    layer = _layer(seed=3)
    x = jnp.ones((1, 12))
    u0 = np.asarray(layer.u[...])
    layer.eval()
    layer(x)
    np.testing.assert_array_equal(layer.u[...], u0)
    layer.train()
    layer(x)
    assert not np.allclose(layer.u[...], u0)


def test_spectral_state_makes_w_hat_equal_w():
    w = np.random.default_rng(0).normal(size=(12, 7)).astype(np.float32)
    layer = _layer(seed=4)
    for name, value in spectral_state(w).items():
        getattr(layer, name)[...] = jnp.asarray(value)
    layer.eval()
    np.testing.assert_allclose(layer.effective_kernel(), w, rtol=1e-5, atol=1e-6)


def test_config_switch_replaces_every_linear_layer():
    cfg = get_preset(
        "tiny", vocab_size=32, num_layers=2, use_sigma_reparam=True, tie_embeddings=False
    )
    model = Llama(cfg, rngs=nnx.Rngs(0))
    linears = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Linear)]
    sigma = [m for _, m in nnx.iter_graph(model) if isinstance(m, SigmaReparamLinear)]
    assert not linears and len(sigma) == 7 * cfg.num_layers + 1
    clf = MLPClassifier(10, 3, hidden=(16,), use_sigma_reparam=True, rngs=nnx.Rngs(0))
    assert not [m for _, m in nnx.iter_graph(clf) if isinstance(m, nnx.Linear)]
    assert len([m for _, m in nnx.iter_graph(clf) if isinstance(m, SigmaReparamLinear)]) == 2
