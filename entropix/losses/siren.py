"""SIREN: selective entropy regularisation ("Rethinking Entropy Regularization in Large
Reasoning Models", 2025).

Two masks confine the entropy term: a top-p mask over the vocabulary (entropy of the nucleus
only) and a peak-entropy mask over positions (only tokens at or above a batch quantile); the
regulariser is self-anchored: it pulls the selected mean entropy toward an anchor value
instead of pushing entropy up without bound.
"""

import jax
import jax.numpy as jnp

from entropix.entropy import log_softmax, masked_mean
from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.registry import register
from entropix.losses.selectors import Selector, quantile_mask
from entropix.validation import check_min_rank, check_positive


def _check_fraction(value, name):
    check_positive(value, name)
    if value > 1:
        raise ValueError(f"{name} must be in (0, 1]; got {value}")


def top_p_entropy(logits, top_p: float = 0.8):
    """Entropy of the renormalised top-p nucleus of softmax(logits), per position (float32).

    The nucleus is the smallest set of most probable classes whose probability reaches
    ``top_p`` (a class is kept while the mass of the classes strictly more probable than it is
    below ``top_p``). Differentiable in the logits; the choice of the set is not. Sorts the
    class axis (O(V log V) per position): pass top-k logits to bound the cost on a large
    vocabulary.
    """
    check_min_rank(logits, "logits", 1, "[..., vocab]")
    _check_fraction(top_p, "top_p")
    logp = log_softmax(logits)
    order = jnp.argsort(-jax.lax.stop_gradient(logp), axis=-1)
    sorted_logp = jnp.take_along_axis(logp, order, axis=-1)
    sorted_p = jnp.exp(jax.lax.stop_gradient(sorted_logp))
    mass_before = jnp.cumsum(sorted_p, axis=-1) - sorted_p
    keep = (mass_before < top_p) & (sorted_p > 0)
    nucleus_logp = jnp.where(keep, sorted_logp, -jnp.inf)
    q_logp = nucleus_logp - jax.nn.logsumexp(nucleus_logp, axis=-1, keepdims=True)
    q_logp = jnp.where(keep, q_logp, 0.0)  # dropped classes: q = 0, keep 0 * -inf out of grads
    q = jnp.where(keep, jnp.exp(q_logp), 0.0)
    return -jnp.sum(q * q_logp, axis=-1)


def peak_entropy_mask(quantile: float = 0.8, top_p: float = 0.8) -> Selector:
    """Tokens whose top-p entropy is at or above the ``quantile`` of the batch's valid tokens."""
    _check_fraction(quantile, "quantile")

    def fn(batch: PolicyBatch):
        logits = batch.require("logits", "peak_entropy_mask")
        entropy = jax.lax.stop_gradient(top_p_entropy(logits, top_p))
        return quantile_mask(entropy, batch.mask, quantile)

    return Selector(f"peak{quantile:g}", fn)


@register(
    "siren",
    paper="Rethinking Entropy Regularization in Large Reasoning Models",
    kind="intervention",
)
def siren(coef: float = 5e-3, top_p: float = 0.8, quantile: float = 0.8) -> Term:
    """SIREN: squared distance of the masked top-p entropy from a self-anchor.

    Formula:
        H^p_t = entropy of softmax(z_t) restricted to its top-p nucleus and renormalised
        M     = valid tokens with H^p_t >= quantile_q(H^p over valid tokens)    (peak mask)
        Hbar  = mean_{t in M} H^p_t
        loss  = (Hbar - H_anchor)^2                                   (weighted by coef)

    Paper: Rethinking Entropy Regularization in Large Reasoning Models (2025).

    Defaults: coef = 5e-3, top_p = 0.8, quantile = 0.8 (the peak mask keeps the top 20%), as
    in the authors' training script. ``H_anchor`` is ``batch.controls["entropy_anchor"]``: the
    authors take Hbar of the initial policy; set it once from this term's ``entropy`` metric
    at the first step. Needs ``batch.logits``. Hbar is a token-mean over M whatever the
    composed aggregation mode (our choice; the objective's own aggregation is unaffected).
    """
    check_positive(coef, "coef")
    _check_fraction(top_p, "top_p")
    peak = peak_entropy_mask(quantile, top_p)

    def fn(batch: PolicyBatch, mask):
        logits = batch.require("logits", "siren")
        anchor = batch.control("entropy_anchor", "siren")
        selected = mask * peak(batch).astype(jnp.float32)
        mean_entropy = masked_mean(top_p_entropy(logits, top_p), selected)
        metrics = {"entropy": mean_entropy, "selected_fraction": masked_mean(selected, mask)}
        return (mean_entropy - anchor) ** 2, metrics

    return Term("siren", fn, coef=coef, per_token=False)
