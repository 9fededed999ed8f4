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
from entropix.losses.selectors import Selector, from_order_keys, order_keys, quantile_mask
from entropix.validation import check_min_rank, check_positive


def _check_fraction(value, name):
    check_positive(value, name)
    if value > 1:
        raise ValueError(f"{name} must be in (0, 1]; got {value}")


def _nucleus(logp, top_p: float):
    """Bool [..., V]: the classes of the top-p nucleus of exp(logp) (no gradient).

    In the order of a stable descending sort of logp, a class is kept while the mass before
    it is below ``top_p`` (and its probability is > 0); with m classes kept, they are the m
    largest, ties going to the lower class index. Only the sorted *values* are needed: the rows
    are sorted as uint32 order keys (several times faster on CPU than a float sort, and no
    gather or scatter of the logits), and the kept classes are those above the m-th value
    plus the earliest ones equal to it.
    """
    x = jax.lax.stop_gradient(logp)
    v = x.shape[-1]
    ordered = from_order_keys(~jnp.sort(~order_keys(x), axis=-1))  # descending values
    sorted_p = jnp.exp(ordered)
    # exclusive prefix sums of the sorted probabilities as one small matmul (a row cumsum is slow)
    before = jnp.triu(jnp.ones((v, v), sorted_p.dtype), k=1)
    mass_before = jnp.matmul(sorted_p, before, precision=jax.lax.Precision.HIGHEST)
    count = jnp.sum((mass_before < top_p) & (sorted_p > 0), axis=-1, keepdims=True)
    boundary = jnp.min(jnp.where(jnp.arange(v) < count, ordered, jnp.inf), axis=-1, keepdims=True)
    above = x > boundary
    tied = x == boundary
    wanted = count - jnp.sum(above, axis=-1, keepdims=True)  # tied classes to keep, >= 1

    def earliest_tied():
        return tied & (jnp.cumsum(tied, axis=-1) <= wanted)

    take = jax.lax.cond(
        jnp.any(jnp.sum(tied, axis=-1, keepdims=True) > wanted), earliest_tied, lambda: tied
    )
    return above | take


def top_p_entropy(logits, top_p: float = 0.8):
    """Entropy of the renormalised top-p nucleus of softmax(logits), per position (float32).

    The nucleus is the smallest set of most probable classes whose probability reaches
    ``top_p`` (a class is kept while the mass of the classes sorted before it, most probable
    first and ties by class index, is below ``top_p``). With Z the nucleus mass,
    H = log Z - sum_nucleus p log p / Z. Differentiable in the logits; the choice of the set
    is not. Sorts the class axis (O(V log V) per position): pass top-k logits to bound the cost
    on a large vocabulary.
    """
    check_min_rank(logits, "logits", 1, "[..., vocab]")
    _check_fraction(top_p, "top_p")
    logp = log_softmax(logits)
    keep = _nucleus(logp, top_p)
    p = jnp.where(keep, jnp.exp(logp), 0.0)
    mass = jnp.sum(p, axis=-1)
    # dropped classes: p = 0, and their log-prob (maybe -inf) kept out of the gradient
    return jnp.log(mass) - jnp.sum(p * jnp.where(keep, logp, 0.0), axis=-1) / mass


def _peak(entropy, valid, quantile: float):
    """Bool mask of the valid tokens whose ``entropy`` is at or above its ``quantile``."""
    return quantile_mask(jax.lax.stop_gradient(entropy), valid, quantile)


def peak_entropy_mask(quantile: float = 0.8, top_p: float = 0.8) -> Selector:
    """Tokens whose top-p entropy is at or above the ``quantile`` of the batch's valid tokens."""
    _check_fraction(quantile, "quantile")

    def fn(batch: PolicyBatch):
        logits = batch.require("logits", "peak_entropy_mask")
        return _peak(top_p_entropy(logits, top_p), batch.mask, quantile)

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
    _check_fraction(quantile, "quantile")

    def fn(batch: PolicyBatch, mask):
        logits = batch.require("logits", "siren")
        anchor = batch.control("entropy_anchor", "siren")
        entropy = top_p_entropy(logits, top_p)  # once, for the peak mask and the loss
        selected = mask * _peak(entropy, batch.mask, quantile).astype(jnp.float32)
        mean_entropy = masked_mean(entropy, selected)
        metrics = {"entropy": mean_entropy, "selected_fraction": masked_mean(selected, mask)}
        return (mean_entropy - anchor) ** 2, metrics

    return Term("siren", fn, coef=coef, per_token=False)
