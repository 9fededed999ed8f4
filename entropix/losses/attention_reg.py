"""Entropy-guided attention regulariser: keep each head's attention entropy near a learnable target.

Paper: "Entropy-Guided Attention for Private LLMs" (Jha & Reagen, 2025). Removing nonlinearities
from a transformer drives early-layer heads to "entropic overload" (attention spread uniformly,
entropy near log T) and deep-layer heads to entropy collapse; the regulariser penalises a head's
per-query entropy when it strays from the head's own learnable threshold by more than a
tolerance band.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from entropix.entropy import attention_entropy
from entropix.losses.registry import register
from entropix.validation import check_floating, check_mask, check_positive, check_rank, check_shape


@register(
    "attention_entropy_reg", paper="Entropy-Guided Attention for Private LLMs", kind="auxiliary"
)
def attention_entropy_reg(
    coef: float = 1e-5, tolerance_factor: float = 0.2, from_probs: bool = False
) -> Callable[..., tuple[jax.Array, dict]]:
    """Penalise per-head attention entropy outside a tolerance band around a learnable threshold.

    Formula:
        (layer l, head h, batch b, query t; n = number of keys, Hmax = ln n)
        theta_{l,h} = w_{l,h} * Hmax                         (w: learnable threshold weights)
        d = H[l, b, h, t] - theta_{l,h}
        P_{l,h} = sum_{b,t} m_{b,t} * d^2 * [|d| > tolerance_factor * Hmax]
        L = coef * mean_l mean_h P_{l,h}

    Paper: "Entropy-Guided Attention for Private LLMs" (Jha & Reagen, 2025).

    Defaults: coef = 1e-5, tolerance 0.2 * ln n, the authors' released settings. As there, the
    penalty is summed over batch and query positions (not averaged) and Hmax uses the full key
    count n (not the causal per-query count). w is a trainable parameter, one per head (and
    layer), that the caller owns, initialises and optimises with the model.

    Returns ``loss_fn(attn, threshold_weights, mask=None, num_keys=None) -> (loss, metrics)``.
    ``attn`` is per-head entropies [B, H, T] (or [L, B, H, T] for L stacked layers) with
    ``num_keys`` = n (default T); with ``from_probs=True`` it is attention probabilities
    [B, H, T, n] (or [L, B, H, T, n]), entropies are computed here and n is the last axis.
    ``threshold_weights`` is [H] (or [L, H]); ``mask`` [B, T] marks the valid query positions.

    Args:
        coef: > 0, the regulariser weight.
        tolerance_factor: > 0, the band half-width as a fraction of Hmax = ln n.
        from_probs: whether ``loss_fn`` receives attention probabilities (True) or per-head
            entropies (False).

    Returns:
        ``loss_fn(attn, threshold_weights, mask=None, num_keys=None)`` -> (float32 scalar
        loss, metrics dict with ``attention_entropy`` and ``outside_fraction``, means over
        valid queries, heads and layers).
    """
    check_positive(coef, "coef")
    check_positive(tolerance_factor, "tolerance_factor")

    def loss_fn(attn, threshold_weights, mask=None, num_keys=None):
        check_floating(attn, "attn")
        check_floating(threshold_weights, "threshold_weights")
        if from_probs:
            check_rank(attn, "attn (probabilities)", (4, 5))
            n = attn.shape[-1] if num_keys is None else num_keys
            entropy = (
                attention_entropy(attn) if attn.ndim == 4 else jax.vmap(attention_entropy)(attn)
            )
        else:
            check_rank(attn, "attn (entropies)", (3, 4))
            entropy = jnp.asarray(attn, jnp.float32)
            n = entropy.shape[-1] if num_keys is None else num_keys
        layered = entropy.ndim == 4
        entropy = entropy if layered else entropy[None]
        num_layers, b, h, t = entropy.shape
        weights = threshold_weights if layered else threshold_weights[None]
        check_shape(weights, "threshold_weights", (num_layers, h))
        m = jnp.ones((b, t), jnp.float32) if mask is None else mask
        check_mask(m, "mask", (b, t))
        if not n > 1:
            raise ValueError(f"num_keys must be > 1 for a nonzero maximum entropy; got {n}")
        h_max = jnp.log(float(n))
        deviation = entropy - weights[:, None, :, None] * h_max
        outside = jnp.abs(deviation) > tolerance_factor * h_max
        penalty = jnp.where(outside, deviation**2, 0.0) * m.astype(jnp.float32)[None, :, None, :]
        per_head = jnp.sum(penalty, axis=(1, 3))
        loss = coef * jnp.mean(per_head)
        valid = jnp.maximum(jnp.sum(m), 1.0) * num_layers * h
        metrics = {
            "attention_entropy": jnp.sum(entropy * m[None, :, None, :]) / valid,
            "outside_fraction": jnp.sum(outside * m[None, :, None, :]) / valid,
        }
        return loss, metrics

    return loss_fn
