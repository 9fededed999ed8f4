"""Entropy telemetry of one update: where the first-order entropy change comes from, and how the
token entropies are spread.

Inputs are per response token, ``[B, N]`` with a ``mask``: the entropy before the update ``h0``
and after it ``h1``, the first-order change of each token's entropy along the update the
optimiser made ``dh`` (one JVP: dh_t = <grad_theta H_t, delta_theta>), the logit-space law of
each token ``law`` = -Cov_{a~pi}(log pi(a), dz(a)) with dz the first-order change of its logits
(Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning Language
Models", Lemma 1; for a softmax head it equals dh up to rounding, so the pair checks the
algebra), the sampled token's log-prob ``logp`` before the update and ``logp_after`` after it,
its first-order logit change ``dz_sampled``, and the advantages.

:func:`dynamics_metrics` returns, with H = token mean over the mask (n valid tokens):

* ``dH/measured`` = sum_t (h1_t - h0_t) / n, ``dH/predicted`` = sum_t dh_t / n,
  ``dH/logit_law`` = sum_t law_t / n, and ``dH/sampled_cov`` = -mean_t (log pi(y_t) - mean
  log pi)(dz(y_t) - mean dz): the paper's estimator from the sampled tokens alone, the form
  Clip-Cov and KL-Cov act on (:func:`~entropix.dynamics.batch_predicted_entropy_change`).
* ``dH/pred/<group>`` = sum_{t in group} dh_t / n for two partitions of the tokens, each summing
  to ``dH/predicted``: the quadrants advantage sign x probability of the sampled token
  (``pos_high``, ``pos_low``, ``neg_high``, ``neg_low``; high: pi(y_t) >= ``prob_threshold``;
  ``zero``: A_t = 0), as in "Rethinking Entropy Interventions in RLVR" and "On the Entropy
  Dynamics in Reinforcement Fine-Tuning" (a likely token reinforced, or an unlikely one
  penalised, sharpens the policy); and ``forking`` / ``non_forking``: tokens at or above the
  ``forking_quantile`` of the batch's token entropies (the top-20% "forking" tokens of "Beyond
  the 80/20 Rule", Wang et al. 2025), except those at the batch's lowest entropy: when most
  tokens share it (e.g. 0 nats in a collapsed policy) the quantile is that value, and only the
  tokens above it fork. Ties at a higher cutoff stay in (the responses of one prompt share
  their first token's entropy), so the split does not hinge on the rounding of equal values.
* ``entropy/p10``, ``entropy/p50``, ``entropy/p90`` (quantiles of h0 over the valid tokens,
  numpy's linear interpolation), ``entropy/pos_adv`` / ``entropy/neg_adv`` (mean h0 of tokens
  with A_t > 0 / A_t < 0; NaN when there are none), ``entropy/forking_fraction`` (share of tokens
  with h0 > ``forking_entropy`` nats; 0.672 is the 80th percentile the 80/20 paper reports),
  ``cov/positive_fraction`` (share of tokens whose centred covariance term (log pi(y_t) - mean)
  (A_t - mean A), means over the batch's valid tokens, is positive: the paper finds the terms
  mostly positive, which is why entropy falls. A term counts above ``POSITIVE_FLOOR`` x the mean
  |term|, so a term that is zero up to rounding does not count by the sign of its rounding:
  a zero-advantage token's term is -mean A x (...), which is rounding when the token mean of A
  is 0 (responses of equal length under group normalisation) and a real term otherwise),
  and ``entropy/position/<i>``: mean h0 over ``position_bins`` contiguous bins of response position
  (bin i holds positions t with floor(t * bins / N) = i, so bin sizes differ by at most one
  when bins does not divide N; NaN for a bin without valid tokens).
* ``dlogp/mean`` and ``dlogp/max``: the mean and the largest |log pi_{theta + delta}(y_t) -
  log pi_theta(y_t)| over the valid tokens, the step's size in policy space on the sampled
  tokens (the log of PPO's ratio after the update). ``dH/predicted`` is the first term of a
  Taylor series in the logit change; a step that moves a token's log-prob by O(1) nats (a
  ratio of e or more) has left the range where that term is the change, and there
  ``dH/measured`` departs from it.
* ``dH/second_order`` (when ``d2h`` is given: d2h_t = d^2/de^2 H_t(theta + e delta) at e = 0,
  from a JVP of the JVP) = sum_t (dh_t + d2h_t / 2) / n, the Taylor series along the update to
  second order. Where it meets ``dH/measured`` and ``dH/predicted`` does not, the first
  order's miss is the curvature of H along delta (a step too large for the first order), not a
  wrong first-order term.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.dynamics.entropy_change import batch_predicted_entropy_change, token_covariance
from entropix.entropy import masked_mean

QUADRANTS = ("pos_high", "pos_low", "neg_high", "neg_low", "zero")
FORKING = ("forking", "non_forking")
POSITIVE_FLOOR = 1e-6  # a covariance term counts as positive above this x the mean |term|


def _mean_or_nan(values, mask):
    """``masked_mean``, but NaN (not 0) when nothing is valid."""
    return jnp.where(jnp.sum(mask) > 0, masked_mean(values, mask), jnp.nan)


def _quantiles(values, mask, qs):
    return jnp.nanquantile(jnp.where(mask, values, jnp.nan), jnp.asarray(qs, jnp.float32))


def token_groups(
    advantages: jax.Array,
    token_prob: jax.Array,
    entropy: jax.Array,
    mask: jax.Array,
    prob_threshold: float = 0.5,
    forking_quantile: float = 0.8,
) -> dict[str, jax.Array]:
    """Bool ``[B, N]`` masks of the quadrant and forking groups (each partition covers ``mask``).

    Args:
        advantages: floating [batch, time] per-token advantages A_t.
        token_prob: floating [batch, time] pi(y_t) of the sampled tokens.
        entropy: floating [batch, time] token entropies (the forking split's key).
        mask: float [batch, time], > 0 = valid token.
        prob_threshold: a token is ``high`` when pi(y_t) >= this; default 0.5.
        forking_quantile: tokens with entropy at or above this quantile of the valid tokens'
            are ``forking``, except those at the lowest valid entropy; default 0.8 (the top
            20% of "Beyond the 80/20 Rule").

    Returns:
        dict of bool [batch, time] masks keyed by :data:`QUADRANTS` and :data:`FORKING`.
    """
    valid = mask > 0
    high = token_prob >= prob_threshold
    groups = {
        "pos_high": valid & (advantages > 0) & high,
        "pos_low": valid & (advantages > 0) & ~high,
        "neg_high": valid & (advantages < 0) & high,
        "neg_low": valid & (advantages < 0) & ~high,
        "zero": valid & (advantages == 0),
    }
    lowest = jnp.min(jnp.where(valid, entropy, jnp.inf))
    forking = valid & (entropy >= _quantiles(entropy, valid, forking_quantile)) & (entropy > lowest)
    groups.update(forking=forking, non_forking=valid & ~forking)
    return groups


def position_means(entropy: jax.Array, mask: jax.Array, bins: int) -> jax.Array:
    """Mean entropy ``[bins]`` over contiguous bins of response position (NaN for an empty bin).

    Bin i holds the positions t with floor(t * bins / N) = i.

    Args:
        entropy: floating [batch, time] token entropies (N = time).
        mask: float [batch, time] token weights (1 = valid).
        bins: number of bins (capped at N; static).

    Returns:
        float32 [min(bins, N)] mean entropies, NaN where a bin has no valid token.
    """
    n = entropy.shape[1]
    bins = min(bins, n)
    which = (jnp.arange(n) * bins) // n  # [N]: the bin of each position
    onehot = (which[:, None] == jnp.arange(bins)[None, :]).astype(jnp.float32)  # [N, bins]
    totals = jnp.einsum("bn,nk->k", entropy * mask, onehot)
    counts = jnp.einsum("bn,nk->k", mask, onehot)
    return jnp.where(counts > 0, totals / jnp.maximum(counts, 1.0), jnp.nan)


def dynamics_metrics(
    h0: jax.Array,
    h1: jax.Array,
    dh: jax.Array,
    law: jax.Array,
    logp: jax.Array,
    logp_after: jax.Array,
    dz_sampled: jax.Array,
    advantages: ArrayLike,
    mask: ArrayLike,
    *,
    prob_threshold: float = 0.5,
    forking_quantile: float = 0.8,
    forking_entropy: float = 0.672,
    position_bins: int = 8,
    d2h: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """The measured and predicted entropy change, its token-group parts and the entropy
    telemetry of one update (see the module docstring for every formula and paper).

    Args:
        h0: floating [batch, time] token entropies before the update.
        h1: floating [batch, time] token entropies after it.
        dh: floating [batch, time] first-order change of each token's entropy along the update.
        law: floating [batch, time] -Cov_{a~pi}(log pi(a), dz(a)) of each token.
        logp: floating [batch, time] log pi(y_t) of the sampled tokens before the update.
        logp_after: floating [batch, time] their log pi(y_t) after it.
        dz_sampled: floating [batch, time] first-order change of the sampled token's logit.
        advantages: floating [batch, time] per-token or [batch] per-response advantages.
        mask: float or bool [batch, time], 1/True = valid token.
        prob_threshold: quadrant split on pi(y_t) (:func:`token_groups`); default 0.5.
        forking_quantile: forking split quantile (:func:`token_groups`); default 0.8.
        forking_entropy: entropy in nats above which a token counts in
            ``entropy/forking_fraction``; default 0.672 (the 80/20 paper's 80th percentile).
        position_bins: number of ``entropy/position/<i>`` bins; default 8.
        d2h: optional floating [batch, time] second derivative of each token's entropy along
            the update; given, ``dH/second_order`` is added.

    Returns:
        dict of float32 scalars keyed by the metric names of the module docstring.
    """
    mask = jnp.asarray(mask, jnp.float32)
    advantages = jnp.asarray(advantages, jnp.float32)
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    advantages = jnp.broadcast_to(advantages, mask.shape)
    valid = mask > 0
    out = {
        "dH/measured": masked_mean(h1 - h0, mask),
        "dH/predicted": masked_mean(dh, mask),
        "dH/logit_law": masked_mean(law, mask),
        "dH/sampled_cov": batch_predicted_entropy_change(logp, dz_sampled, mask),
    }
    if d2h is not None:
        out["dH/second_order"] = masked_mean(dh + 0.5 * d2h, mask)
    groups = token_groups(advantages, jnp.exp(logp), h0, mask, prob_threshold, forking_quantile)
    # a group's part: the sum of its tokens' dh over all valid tokens (so the parts sum to it)
    parts = {name: masked_mean(jnp.where(group, dh, 0.0), mask) for name, group in groups.items()}
    out.update({f"dH/pred/{name}": part for name, part in parts.items()})
    p10, p50, p90 = _quantiles(h0, valid, (0.1, 0.5, 0.9))
    covariance = token_covariance(logp, advantages, mask)
    floor = POSITIVE_FLOOR * masked_mean(jnp.abs(covariance), mask)
    moved = jnp.abs(jnp.asarray(logp_after, jnp.float32) - jnp.asarray(logp, jnp.float32))
    out.update(
        {
            "entropy/p10": p10,
            "entropy/p50": p50,
            "entropy/p90": p90,
            "entropy/pos_adv": _mean_or_nan(h0, mask * (advantages > 0)),
            "entropy/neg_adv": _mean_or_nan(h0, mask * (advantages < 0)),
            "entropy/forking_fraction": masked_mean((h0 > forking_entropy) * 1.0, mask),
            "cov/positive_fraction": masked_mean((covariance > floor) * 1.0, mask),
            "dlogp/mean": masked_mean(moved, mask),
            "dlogp/max": jnp.max(jnp.where(valid, moved, 0.0)),
        }
    )
    for i, value in enumerate(position_means(h0, mask, position_bins)):
        out[f"entropy/position/{i}"] = value
    return out
