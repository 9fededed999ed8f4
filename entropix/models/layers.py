"""Decoder building blocks: RMSNorm, rotary position embeddings, and the linear-layer switch.

RMSNorm ("Root Mean Square Layer Normalization", Zhang & Sennrich 2019):
    y = x / sqrt(mean(x^2) + eps) * w                      (computed in fp32)

RoPE ("RoFormer: Enhanced Transformer with Rotary Position Embedding", Su et al. 2021), in the
"rotate-half" layout used by Hugging Face Llama checkpoints: for head dim d and position p,
    inv_freq_i = theta^(-2i/d),  a = p * [inv_freq, inv_freq]          (i = 0 .. d/2 - 1)
    rope(x) = x * cos(a) + rotate_half(x) * sin(a),   rotate_half([x1, x2]) = [-x2, x1]
Default theta = 10000 (the paper); Llama checkpoints set their own (SmolLM2: 1e5).

RoPE scaling (``rope_inv_freq``), with f_i = inv_freq_i and wavelength w_i = 2 pi / f_i:
* "linear" (position interpolation, "Extending Context Window of Large Language Models via
  Positional Interpolation", Chen et al. 2023): f_i / factor.
* "llama3" ("The Llama 3 Herd of Models", Llama Team 2024; Llama 3.1 defaults factor 8,
  low_freq_factor 1, high_freq_factor 4, original_max_len L = 8192): f_i if w_i < L / high;
  f_i / factor if w_i > L / low; otherwise (1 - s) f_i / factor + s f_i with
  s = (L / w_i - low) / (high - low).
* per-frequency divisors d_i (llama.cpp's ``rope_freqs.weight`` in GGUF): f_i / d_i.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.typing import Initializer
from jax.typing import ArrayLike, DTypeLike

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


ROPE_TYPES = ("default", "linear", "llama3")


def rope_inv_freq(
    head_dim: int,
    theta: float = 10000.0,
    *,
    rope_type: str = "default",
    factor: float = 1.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_max_len: int = 8192,
    freq_factors: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """RoPE inverse frequencies [head_dim / 2] (fp32): theta^(-2i/d), scaled (module docstring).

    Computed in float64 on the host (a constant of the config) and rounded to fp32.

    Args:
        head_dim: d, the (even) size of each attention head.
        theta: the RoPE base; default 10000 (the paper).
        rope_type: "default" (no scaling), "linear" or "llama3" (module docstring).
        factor: the scaling factor of "linear" and "llama3"; unused by "default".
        low_freq_factor: "llama3" only; wavelengths above original_max_len / low_freq_factor
            are divided by ``factor``.
        high_freq_factor: "llama3" only; wavelengths below original_max_len / high_freq_factor
            are kept.
        original_max_len: "llama3" only; L, the pre-training context length.
        freq_factors: optional [head_dim / 2] per-frequency divisors (GGUF ``rope_freqs``),
            applied after any scaling; None for none.

    Returns:
        float32 [head_dim / 2] inverse frequencies (radians per position).
    """
    inv_freq = float(theta) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if rope_type == "linear":
        inv_freq = inv_freq / factor
    elif rope_type == "llama3":
        wavelen = 2 * math.pi / inv_freq
        low_wavelen = original_max_len / low_freq_factor
        high_wavelen = original_max_len / high_freq_factor
        smooth = (original_max_len / wavelen - low_freq_factor) / (
            high_freq_factor - low_freq_factor
        )
        smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = np.where(
            wavelen < high_wavelen,
            inv_freq,
            np.where(wavelen > low_wavelen, inv_freq / factor, smoothed),
        )
    elif rope_type != "default":
        raise ValueError(f"rope_type {rope_type!r} is not one of {ROPE_TYPES}")
    if freq_factors is not None:
        inv_freq = inv_freq / np.asarray(freq_factors, np.float64)
    return inv_freq.astype(np.float32)


def rope_cos_sin(
    positions: ArrayLike,
    head_dim: int,
    theta: float = 10000.0,
    inv_freq: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """cos, sin tables [..., head_dim] (fp32) for integer ``positions`` [...].

    ``inv_freq`` [head_dim / 2] (from ``rope_inv_freq``, e.g. scaled) replaces theta^(-2i/d).

    Args:
        positions: integer [...] token positions (e.g. [B, T]).
        head_dim: d, the size of each attention head.
        theta: the RoPE base, used only when ``inv_freq`` is None; default 10000.
        inv_freq: optional [head_dim / 2] inverse frequencies; None for theta^(-2i/d).

    Returns:
        ``(cos, sin)``, each float32 [..., head_dim] (the angles repeated in both halves).
    """
    if inv_freq is None:
        inv_freq = rope_inv_freq(head_dim, theta)
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: ArrayLike, cos: ArrayLike, sin: ArrayLike) -> jax.Array:
    """Rotate x [B, T, heads, d] by cos/sin [B, T, d] (rotate-half layout); fp32 math.

    Args:
        x: [B, T, heads, d] queries or keys, any float dtype.
        cos: float32 [B, T, d] table from :func:`rope_cos_sin`.
        sin: float32 [B, T, d] table from :func:`rope_cos_sin`.

    Returns:
        [B, T, heads, d] rotated ``x``, in ``x``'s dtype.
    """
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
    dtype: DTypeLike | None,
    param_dtype: DTypeLike,
    rngs: nnx.Rngs,
    use_bias: bool = False,
    kernel_init: Initializer | None = None,
) -> nnx.Linear | SigmaReparamLinear:
    """An ``nnx.Linear`` or, when ``sigma_reparam``, a ``SigmaReparamLinear`` (N(0, 0.02) init).

    Args:
        in_features: input size.
        out_features: output size.
        sigma_reparam: whether to build a ``SigmaReparamLinear`` instead of an ``nnx.Linear``.
        dtype: computation dtype; None to compute in the inputs' and params' promoted dtype.
        param_dtype: dtype of the kernel (and bias).
        rngs: the ``nnx`` random streams for initialisation.
        use_bias: whether the layer adds a bias; default False.
        kernel_init: the kernel initialiser; None for N(0, 0.02).

    Returns:
        The new layer, mapping [..., in_features] to [..., out_features].
    """
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
