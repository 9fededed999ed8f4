"""SIREN: selective entropy regularisation ("Rethinking Entropy Regularization in Large
Reasoning Models", 2025).

Two masks confine the entropy term: a top-p mask over the vocabulary (entropy of the nucleus
only, :func:`entropix.entropy.top_p_entropy`) and a peak-entropy mask over positions (only
tokens at or above a batch quantile); the regulariser is self-anchored: it pulls the selected
mean entropy toward an anchor value instead of pushing entropy up without bound.
"""

import jax
import jax.numpy as jnp

from entropix.entropy import masked_mean, top_p_entropy
from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.registry import register
from entropix.losses.selectors import Selector, quantile_mask
from entropix.validation import check_fraction, check_positive


def _peak(entropy, valid, quantile: float):
    """Bool mask of the valid tokens whose ``entropy`` is at or above its ``quantile``."""
    return quantile_mask(jax.lax.stop_gradient(entropy), valid, quantile)


def peak_entropy_mask(quantile: float = 0.8, top_p: float = 0.8) -> Selector:
    """Tokens whose top-p entropy is at or above the ``quantile`` of the batch's valid tokens.

    Args:
        quantile: the batch quantile level in [0, 1] a token's entropy must reach.
        top_p: nucleus mass in (0, 1] over which the entropy is taken.

    Returns:
        A :class:`Selector` named ``"peak<quantile>"`` that needs ``logits``.
    """
    check_fraction(quantile, "quantile")

    def fn(batch: PolicyBatch):
        logits = batch.require("logits", "peak_entropy_mask")
        return _peak(top_p_entropy(logits, top_p), batch.mask, quantile)

    return Selector(f"peak{quantile:g}", fn, frozenset({"logits"}))


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
    authors take Hbar of the initial policy, which the ``entropy_anchor`` controller
    (``entropix.optim.EntropyAnchor``) records from this term's ``entropy`` metric at the first
    step. While the anchor is NaN (not recorded yet) it is Hbar itself without gradient, so the
    loss and its gradient are 0: the first step's Hbar is the initial policy's. Needs
    ``batch.logits``. Hbar is a token-mean over M whatever the
    composed aggregation mode (our choice; the objective's own aggregation is unaffected).

    Args:
        coef: > 0, the regulariser weight.
        top_p: nucleus mass in (0, 1] of the top-p entropy.
        quantile: peak-mask quantile level in [0, 1].

    Returns:
        A scalar :class:`Term` named ``"siren"`` (needs ``logits`` and the ``entropy_anchor``
        control) with metrics ``entropy`` (Hbar) and ``selected_fraction``.
    """
    check_positive(coef, "coef")
    check_fraction(top_p, "top_p")
    check_fraction(quantile, "quantile")

    def fn(batch: PolicyBatch, mask):
        logits = batch.require("logits", "siren")
        anchor = batch.control("entropy_anchor", "siren")
        entropy = top_p_entropy(logits, top_p)  # once, for the peak mask and the loss
        selected = mask * _peak(entropy, batch.mask, quantile).astype(jnp.float32)
        mean_entropy = masked_mean(entropy, selected)
        anchor = jnp.where(jnp.isnan(anchor), jax.lax.stop_gradient(mean_entropy), anchor)
        metrics = {"entropy": mean_entropy, "selected_fraction": masked_mean(selected, mask)}
        return (mean_entropy - anchor) ** 2, metrics

    return Term(
        "siren",
        fn,
        coef=coef,
        per_token=False,
        needs=("logits",),
        controls=("entropy_anchor",),
    )
