"""HL-Gauss: train a value head by classification onto a Gaussian-smoothed histogram of the target.

Paper: "Stop Regressing: Training Value Functions via Classification for Scalable Deep RL"
(Farebrother et al., ICML 2024). The support [v_min, v_max] is cut into m equal bins; a scalar
target y becomes the probability mass that N(y, sigma^2) puts on each bin (renormalised to the
support), and the value head's m logits are trained with cross-entropy against it.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erf
from jax.typing import ArrayLike

from entropix.entropy import log_softmax, masked_mean
from entropix.losses.registry import register
from entropix.validation import check_floating, check_mask, check_positive, check_shape


def _support(min_value: float, max_value: float, num_bins: int):
    """Bin edges [num_bins + 1] and centres [num_bins] of the support, float32."""
    edges = jnp.linspace(min_value, max_value, num_bins + 1, dtype=jnp.float32)
    return edges, 0.5 * (edges[:-1] + edges[1:])


def hl_gauss_transform(
    min_value: float, max_value: float, num_bins: int, sigma: float | None = None
) -> tuple[Callable[[ArrayLike], jax.Array], Callable[[ArrayLike], jax.Array]]:
    """Build ``(to_probs, to_scalar)`` for the HL-Gauss histogram on [min_value, max_value].

    Formula:
        (edges e_0 < ... < e_m evenly spaced, centres c_i = (e_i + e_{i+1}) / 2)
        to_probs(y)_i  = [Phi((e_{i+1} - y) / sigma) - Phi((e_i - y) / sigma)]
                         / [Phi((e_m - y) / sigma) - Phi((e_0 - y) / sigma)]
        to_scalar(z)   = sum_i softmax(z)_i c_i

    ``sigma`` defaults to 0.75 * bin width, the paper's recommended sigma / zeta ratio. Targets
    are clipped into [min_value, max_value] first (outside it the normaliser vanishes).
    ``to_probs`` maps [...] -> [..., num_bins]; ``to_scalar`` maps logits [..., num_bins] -> [...].

    Args:
        min_value: lower end v_min of the support.
        max_value: upper end v_max of the support, > min_value.
        num_bins: number m of bins, an int >= 2.
        sigma: > 0, the Gaussian's standard deviation in target units; None for 0.75 * bin
            width.

    Returns:
        ``(to_probs, to_scalar)``: float32 target histograms [..., num_bins] from targets
        [...], and float32 expected values [...] from logits [..., num_bins].
    """
    if not max_value > min_value:
        raise ValueError(f"max_value must exceed min_value; got [{min_value}, {max_value}]")
    if not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2; got {num_bins!r}")
    width = (max_value - min_value) / num_bins
    sigma = 0.75 * width if sigma is None else sigma
    check_positive(sigma, "sigma")
    edges, centres = _support(min_value, max_value, num_bins)

    def to_probs(targets):
        check_floating(targets, "targets")
        y = jnp.clip(jnp.asarray(targets, jnp.float32), min_value, max_value)[..., None]
        cdf = 0.5 * (1.0 + erf((edges - y) / (jnp.sqrt(2.0) * sigma)))
        return (cdf[..., 1:] - cdf[..., :-1]) / (cdf[..., -1:] - cdf[..., :1])

    def to_scalar(logits):
        check_floating(logits, "logits")
        check_shape(logits, "logits", (*logits.shape[:-1], num_bins))
        return jnp.sum(jnp.exp(log_softmax(logits)) * centres, axis=-1)

    return to_probs, to_scalar


@jax.custom_jvp
def _cross_entropy(logits, target_probs):
    """(-sum_i q_i log softmax(z)_i, softmax(z)) over the last axis, from one exponential pass.

    With m = max z, s = sum_i exp(z_i - m) and p = softmax(z):
        CE = (sum_i q_i) (m + log s) - sum_{i: q_i > 0} q_i z_i
        dCE = sum_i ((sum_j q_j) p_i - q_i) dz_i,     dp = p (dz - sum_i p_i dz_i)
    (a bin with q_i = 0 contributes nothing even where z_i = -inf). The softmax p comes back for
    the predicted value. A custom JVP, so reverse mode transposes only the derivatives of the
    outputs in use (the loss alone skips the softmax's); the target histogram gets no gradient.
    """
    cross_entropy, probs, _ = _cross_entropy_parts(logits, target_probs)
    return cross_entropy, probs


def _cross_entropy_parts(logits, target_probs):
    z = jnp.asarray(logits, jnp.float32)
    top = jnp.max(z, axis=-1, keepdims=True)
    e = jnp.exp(z - top)
    total = jnp.sum(e, axis=-1, keepdims=True)
    mass = jnp.sum(target_probs, axis=-1)
    lse = (top + jnp.log(total))[..., 0]
    ce = mass * lse - jnp.sum(jnp.where(target_probs > 0, target_probs * z, 0.0), axis=-1)
    return ce, e / total, mass


@_cross_entropy.defjvp
def _cross_entropy_jvp(primals, tangents):
    logits, target_probs = primals
    dz = jnp.asarray(tangents[0], jnp.float32)
    ce, p, mass = _cross_entropy_parts(logits, target_probs)
    p_dz = jnp.sum(p * dz, axis=-1)
    d_ce = mass * p_dz - jnp.sum(target_probs * dz, axis=-1)
    return (ce, p), (d_ce, p * (dz - p_dz[..., None]))


@register(
    "hl_gauss",
    paper="Stop Regressing: Training Value Functions via Classification for Scalable Deep RL",
    kind="auxiliary",
)
def hl_gauss(
    min_value: float, max_value: float, num_bins: int, sigma_ratio: float = 0.75
) -> Callable[..., tuple[jax.Array, dict]]:
    """HL-Gauss value loss: cross-entropy between value logits and the Gaussian-smoothed target.

    Formula:
        q(y)_i = mass of N(y, sigma^2) on bin i, renormalised to [v_min, v_max]
                 (:func:`hl_gauss_transform`),  sigma = sigma_ratio * (v_max - v_min) / m
        L = mean over valid positions of  -sum_i q(y)_i log softmax(z)_i

    Paper: "Stop Regressing: Training Value Functions via Classification for Scalable Deep RL"
    (Farebrother et al., ICML 2024).

    Defaults: sigma / bin width = 0.75 (the paper's recommendation); the support and the number
    of bins are task-specific and have no default. The target histogram carries no gradient.

    Returns ``loss_fn(logits[..., m], targets[...], mask=None) -> (loss, {"value", "value_error"})``
    where ``value`` is the mean predicted scalar and ``value_error`` its mean absolute error.

    Args:
        min_value: lower end v_min of the value support.
        max_value: upper end v_max of the value support, > min_value.
        num_bins: number m of bins (the value head's width), an int >= 2.
        sigma_ratio: > 0, sigma as a multiple of the bin width.

    Returns:
        ``loss_fn(logits, targets, mask=None)``: value logits [..., m], float targets [...]
        and an optional 0/1 mask [...] -> (float32 scalar loss, metrics dict with ``value``
        and ``value_error``).
    """
    check_positive(sigma_ratio, "sigma_ratio")
    width = (max_value - min_value) / num_bins if num_bins else 0.0
    to_probs, _ = hl_gauss_transform(min_value, max_value, num_bins, sigma_ratio * width)
    _, centres = _support(min_value, max_value, num_bins)

    def loss_fn(logits, targets, mask=None):
        check_floating(logits, "logits")
        check_shape(logits, "logits", (*jnp.shape(targets), num_bins))
        if mask is not None:
            check_mask(mask, "mask", jnp.shape(targets))
        cross_entropy, probs = _cross_entropy(logits, to_probs(targets))
        value = jnp.sum(probs * centres, axis=-1)  # to_scalar(logits), from the same softmax
        metrics = {
            "value": masked_mean(value, mask),
            "value_error": masked_mean(jnp.abs(value - targets), mask),
        }
        return masked_mean(cross_entropy, mask), metrics

    return loss_fn
