"""sigmaReparam linear layer: a weight rescaled by a learned gain over its spectral norm.

    W_hat = (gamma / sigma(W)) * W,        sigma(W) ~= u^T W^T v   (largest singular value)

u, v are the leading left/right singular-vector estimates, refined by one power-iteration step
per training forward (kernel W is stored [in, out], so y = x @ W_hat):

    v <- normalize(W u),    u <- normalize(W^T v),    sigma = v^T W u

The iteration runs under ``stop_gradient``: u and v are non-trainable state (``PowerIterate``
variables, excluded from ``nnx.Param`` and therefore from the optimiser), and the gradient of
W_hat flows through W and through sigma = v^T W u with u, v held fixed.

Paper: "Stabilizing Transformer Training by Preventing Attention Entropy Collapse" (Zhai et al.,
ICML 2023). Defaults as there: gamma is a learned scalar initialised to 1, one power iteration
per training step, u and v initialised from a random normal draw. In eval mode
(``module.eval()``, i.e. ``deterministic=True``) the stored u, v are used without refinement.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike


class PowerIterate(nnx.Variable):
    """Non-trainable power-iteration state (singular-vector estimates) of a sigmaReparam layer."""


def _normalize(x, eps: float = 1e-12):
    return x / jnp.maximum(jnp.linalg.norm(x), eps)


def power_iteration_step(kernel: ArrayLike, u: ArrayLike) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One power-iteration step on kernel [in, out]: returns (u', v', sigma), no gradient to u, v.

    v' = normalize(W u), u' = normalize(W^T v'), sigma = v'^T W u' (gradient flows to W only).

    Args:
        kernel: W, the [in, out] weight (any float dtype; the step runs in float32).
        u: float32 [out] current right singular-vector estimate (v' is computed from it, so
            the left estimate v is not an input).

    Returns:
        ``(u', v', sigma)``: float32 unit vectors [out] and [in] (gradient stopped) and the
        float32 scalar spectral-norm estimate v'^T W u'.
    """
    w = jax.lax.stop_gradient(kernel.astype(jnp.float32))
    v_new = _normalize(w @ u)
    u_new = _normalize(w.T @ v_new)
    u_new, v_new = jax.lax.stop_gradient(u_new), jax.lax.stop_gradient(v_new)
    sigma = v_new @ kernel.astype(jnp.float32) @ u_new
    return u_new, v_new, sigma


def spectral_state(kernel: ArrayLike) -> dict[str, np.ndarray]:
    """Exact sigmaReparam state for a given kernel [in, out] so that W_hat == kernel.

    Uses the SVD: u, v = leading right/left singular vectors, gamma = sigma_max(W). Loaders use
    it to put pretrained weights into a sigmaReparam model without changing its function.

    Args:
        kernel: the [in, out] weight to reproduce (SVD computed in float64 on the host).

    Returns:
        float32 numpy arrays by variable name: ``"kernel"`` [in, out], ``"gamma"`` (scalar),
        ``"u"`` [out] and ``"v"`` [in].
    """
    w = np.asarray(kernel, np.float64)
    left, singular, right_t = np.linalg.svd(w, full_matrices=False)
    return {
        "kernel": np.asarray(kernel, np.float32),
        "gamma": np.asarray(singular[0], np.float32),
        "u": right_t[0].astype(np.float32),
        "v": left[:, 0].astype(np.float32),
    }


class SigmaReparamLinear(nnx.Module):
    """Bias-free linear layer y = x @ (gamma / sigma(W)) W; drop-in for ``nnx.Linear``.

    ``deterministic=False`` (training, the default) refines u, v by one power-iteration step per
    call and stores them; ``deterministic=True`` (``model.eval()``) uses the stored estimates.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = False,
        dtype=None,
        param_dtype=jnp.float32,
        kernel_init=None,
        rngs: nnx.Rngs,
        deterministic: bool = False,
    ):
        self.in_features, self.out_features = in_features, out_features
        self.dtype, self.deterministic = dtype, deterministic
        init = kernel_init or nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
        self.gamma = nnx.Param(jnp.ones((), param_dtype))
        key_u, key_v = jax.random.split(rngs.params())
        self.u = PowerIterate(_normalize(jax.random.normal(key_u, (out_features,), jnp.float32)))
        self.v = PowerIterate(_normalize(jax.random.normal(key_v, (in_features,), jnp.float32)))

    def sigma(self) -> jax.Array:
        """Current spectral-norm estimate v^T W u with the stored u, v (no state change).

        Returns:
            float32 scalar; gradient flows to the kernel only.
        """
        u, v = jax.lax.stop_gradient(self.u[...]), jax.lax.stop_gradient(self.v[...])
        return v @ self.kernel[...].astype(jnp.float32) @ u

    def effective_kernel(self, update: bool = False) -> jax.Array:
        """W_hat = gamma / sigma * W; with ``update`` first take one power-iteration step.

        Args:
            update: whether to refine and store u, v first (training); default False.

        Returns:
            [in, out] W_hat in the kernel's dtype (scaled in float32).
        """
        kernel = self.kernel[...]
        if update:
            u, v, sigma = power_iteration_step(kernel, self.u[...])
            self.u[...], self.v[...] = u, v
        else:
            sigma = self.sigma()
        scale = self.gamma[...].astype(jnp.float32) / sigma
        return (scale * kernel.astype(jnp.float32)).astype(kernel.dtype)

    def __call__(self, x):
        kernel = self.effective_kernel(update=not self.deterministic)
        dtype = self.dtype or jnp.result_type(x, kernel)
        y = jnp.dot(x.astype(dtype), kernel.astype(dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y
