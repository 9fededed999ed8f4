"""Decoder building blocks: RMSNorm, rotary position embeddings, and the linear-layer switch.

RMSNorm ("Root Mean Square Layer Normalization", Zhang & Sennrich 2019):
    y = x / sqrt(mean(x^2) + eps) * w                      (computed in fp32)

RoPE ("RoFormer: Enhanced Transformer with Rotary Position Embedding", Su et al. 2021), in the
"rotate-half" layout used by Hugging Face Llama checkpoints: for head dim d and position p,
    inv_freq_i = theta^(-2i/d),  a = p * [inv_freq, inv_freq]          (i = 0 .. d/2 - 1)
    rope(x) = x * cos(a) + rotate_half(x) * sin(a),   rotate_half([x1, x2]) = [-x2, x1]
Default theta = 10000 (the paper); Llama checkpoints set their own (SmolLM2: 1e5).
"""

import jax.numpy as jnp
from flax import nnx

from entropix.models.sigma_reparam import SigmaReparamLinear


class RMSNorm(nnx.Module):
    """y = x / sqrt(mean(x^2, -1) + eps) * weight, normalised in fp32, returned in x's dtype."""

    def __init__(self, dim: int, *, eps: float = 1e-5, param_dtype=jnp.float32):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        normed = x32 * jnp.reciprocal(jnp.sqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps))
        return self.weight[...].astype(x.dtype) * normed.astype(x.dtype)


def rope_cos_sin(positions, head_dim: int, theta: float = 10000.0):
    """cos, sin tables [..., head_dim] (fp32) for integer ``positions`` [...]."""
    inv_freq = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, cos, sin):
    """Rotate x [B, T, heads, d] by cos/sin [B, T, d] (rotate-half layout); fp32 math."""
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(x.dtype)


def linear(
    in_features: int,
    out_features: int,
    *,
    sigma_reparam: bool,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
    use_bias: bool = False,
    kernel_init=None,
):
    """An ``nnx.Linear`` or, when ``sigma_reparam``, a ``SigmaReparamLinear`` (N(0, 0.02) init)."""
    cls = SigmaReparamLinear if sigma_reparam else nnx.Linear
    return cls(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=kernel_init or nnx.initializers.normal(0.02),
        rngs=rngs,
    )
