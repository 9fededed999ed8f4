"""Masked reductions over ``[batch, time]`` token values, and the four loss aggregation modes.

All sums accumulate in float32 whatever the input dtype. A fully masked reduction returns 0
(never NaN), so padding-only rows are harmless.

Aggregation modes (x: values [B, T], m: mask [B, T], L = number of valid tokens):

* ``token-mean``               sum_{b,t} m x / sum_{b,t} m
  (every token weighs the same; DAPO's "token-level policy gradient loss").
* ``seq-mean-token-mean``      (1/B') sum_b [ sum_t m x / sum_t m ]
  (the original GRPO objective; B' = rows with at least one valid token).
* ``seq-mean-token-sum``       (1/B') sum_b sum_t m x
  (sequence sums, no length normalisation).
* ``seq-mean-token-sum-norm``  (1/B') sum_b sum_t m x / norm
  (Dr. GRPO, "Understanding R1-Zero-Like Training: A Critical Perspective": divide by a
  constant, not by each response's length; ``norm`` defaults to T, the padded length).
"""

from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.validation import check_choice, check_mask, check_rank

AggregationMode = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]
AGGREGATION_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)


def _safe_div(num, den):
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def masked_sum(
    x: ArrayLike, mask: ArrayLike | None = None, axis: int | tuple[int, ...] | None = None
) -> jax.Array:
    """sum(x * mask) over ``axis`` in float32 (mask defaults to all ones).

    Args:
        x: values, e.g. [batch, time] per-token values (any numeric dtype).
        mask: float or bool, the shape of ``x`` (1/True = valid); default all valid.
        axis: axis or axes to reduce; default all.

    Returns:
        float32 sum, the shape of ``x`` without ``axis``.
    """
    x = jnp.asarray(x, jnp.float32)
    if mask is None:
        return jnp.sum(x, axis=axis)
    check_mask(mask, "mask", x.shape)
    return jnp.sum(x * mask.astype(jnp.float32), axis=axis)


def masked_mean(
    x: ArrayLike, mask: ArrayLike | None = None, axis: int | tuple[int, ...] | None = None
) -> jax.Array:
    """sum(x * mask) / sum(mask) over ``axis`` in float32; 0 where nothing is valid.

    Args:
        x: values, e.g. [batch, time] per-token values.
        mask: float or bool, the shape of ``x`` (weights; 1/True = valid); default all valid.
        axis: axis or axes to reduce; default all.

    Returns:
        float32 mean, the shape of ``x`` without ``axis`` (0 where the mask sums to 0).
    """
    x = jnp.asarray(x, jnp.float32)
    if mask is None:
        return jnp.mean(x, axis=axis)
    check_mask(mask, "mask", x.shape)
    m = mask.astype(jnp.float32)
    return _safe_div(jnp.sum(x * m, axis=axis), jnp.sum(m, axis=axis))


def masked_var(
    x: ArrayLike, mask: ArrayLike | None = None, axis: int | tuple[int, ...] | None = None
) -> jax.Array:
    """Population variance of the valid entries: mean((x - mean x)^2) under the mask.

    Args:
        x: values, e.g. [batch, time] per-token values.
        mask: float or bool, the shape of ``x`` (1/True = valid); default all valid.
        axis: axis or axes to reduce; default all.

    Returns:
        float32 variance, the shape of ``x`` without ``axis`` (0 where nothing is valid).
    """
    mean = masked_mean(x, mask, axis=axis)
    centred = jnp.asarray(x, jnp.float32) - (mean if axis is None else jnp.expand_dims(mean, axis))
    return masked_mean(centred**2, mask, axis=axis)


def aggregate(
    values: ArrayLike,
    mask: ArrayLike,
    mode: AggregationMode = "token-mean",
    norm: float | None = None,
) -> jax.Array:
    """Reduce per-token ``values [B, T]`` under ``mask [B, T]`` to a scalar by ``mode``.

    See the module docstring for the four formulas and their papers.

    Args:
        values: [batch, time] per-token values.
        mask: float or bool [batch, time], 1/True = valid token.
        mode: one of :data:`AGGREGATION_MODES`; default ``"token-mean"``.
        norm: the constant divisor of ``seq-mean-token-sum-norm`` (unused by the other modes);
            default T, the padded length.

    Returns:
        float32 scalar (0 when no token is valid).
    """
    check_choice(mode, "aggregate mode", AGGREGATION_MODES)
    check_rank(values, "values", 2)
    check_mask(mask, "mask", jnp.shape(values))
    x = jnp.asarray(values, jnp.float32)
    m = mask.astype(jnp.float32)
    if mode == "token-mean":
        return _safe_div(jnp.sum(x * m), jnp.sum(m))
    seq_tokens = jnp.sum(m, axis=-1)
    seq_sum = jnp.sum(x * m, axis=-1)
    if mode == "seq-mean-token-mean":
        per_seq = _safe_div(seq_sum, seq_tokens)
    elif mode == "seq-mean-token-sum":
        per_seq = seq_sum
    else:
        per_seq = seq_sum / (x.shape[-1] if norm is None else norm)
    rows = (seq_tokens > 0).astype(jnp.float32)
    return _safe_div(jnp.sum(per_seq * rows), jnp.sum(rows))
