"""STEER: reweight tokens by how much their update is predicted to change the policy entropy.

Paper: "Rethinking Entropy Interventions in RLVR: An Entropy Change Perspective" (Hao, Wang et
al., 2025). A first-order analysis of one GRPO step gives each token's contribution to the
entropy change,

    Omega_t = (A_t / pi_old(y_t)) * p_t (1 - p_t) * (log p_t + H_t),   p_t = pi_theta(y_t),

and STEER down-weights the tokens with the largest |Omega| (those that would move entropy most)
by a linear map of |Omega| onto [w_min, w_max] across the batch.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import masked_mean
from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.objectives import clipped_surrogate, policy_ratio
from entropix.losses.registry import register
from entropix.validation import check_mask, check_positive


def entropy_change_score(
    logp: ArrayLike, old_logp: ArrayLike, advantages: ArrayLike, entropy: ArrayLike
) -> jax.Array:
    """Omega = (A / pi_old) p (1 - p) (log p + H), p = exp(logp); inputs [B, T], no gradient.

    Args:
        logp: [B, T] float, the sampled tokens' log-probs under the current policy.
        old_logp: [B, T] float, their log-probs under the behaviour policy.
        advantages: [B, T] float, per-token advantages.
        entropy: [B, T] float, per-token policy entropy (nats).

    Returns:
        float32 [B, T], the score Omega (stop-gradient).
    """
    logp, old_logp, advantages, entropy = (
        jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
        for x in (logp, old_logp, advantages, entropy)
    )
    p = jnp.clip(jnp.exp(logp), 1e-8, 1.0 - 1e-8)
    old_p = jnp.clip(jnp.exp(old_logp), 1e-8, 1.0)
    return advantages / old_p * p * (1.0 - p) * (jnp.log(p) + entropy)


def steer_token_weights(
    score: jax.Array, mask: ArrayLike, w_min: float = 0.8, w_max: float = 1.2
) -> jax.Array:
    """Map |Omega| linearly onto [w_max, w_min] over the valid tokens (largest |Omega| -> w_min).

    Formula:
        a = |Omega|,  a_lo / a_hi = min / max of a over valid tokens
        w = w_max - (a - a_lo) * (w_max - w_min) / (a_hi - a_lo)
        w = (w_min + w_max) / 2 when a_hi = a_lo
        w = 0 on padding

    Args:
        score: [B, T] float, the score Omega (:func:`entropy_change_score`).
        mask: [B, T] 0/1 mask of the tokens the range is taken over.
        w_min: weight of the largest |Omega|, 0 <= w_min <= w_max.
        w_max: weight of the smallest |Omega|.

    Returns:
        float32 [B, T], the weights w in [w_min, w_max] (0 on padding).
    """
    if not 0.0 <= w_min <= w_max:
        raise ValueError(f"need 0 <= w_min <= w_max; got w_min={w_min}, w_max={w_max}")
    check_mask(mask, "mask", score.shape)
    valid = mask.astype(bool)
    a = jnp.abs(jnp.where(jnp.isfinite(score), score, 0.0))
    a_lo = jnp.min(jnp.where(valid, a, jnp.inf))
    a_hi = jnp.max(jnp.where(valid, a, -jnp.inf))
    span = a_hi - a_lo
    scaled = w_max - (a - a_lo) * (w_max - w_min) / jnp.where(span > 0, span, 1.0)
    w = jnp.where(span > 0, jnp.clip(scaled, w_min, w_max), 0.5 * (w_min + w_max))
    return jnp.where(valid, w, 0.0)


@register(
    "steer",
    paper="Rethinking Entropy Interventions in RLVR: An Entropy Change Perspective",
    kind="intervention",
)
def steer(
    w_min: float = 0.8,
    w_max: float = 1.2,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip: float | None = 3.0,
    coef: float = 1.0,
) -> Term:
    """STEER: the clipped surrogate with each token weighted by its predicted entropy change.

    Formula:
        Omega_t = (A_t / pi_old(y_t)) p_t (1 - p_t) (log p_t + H_t),   p_t = pi_theta(y_t)
        w_t = w_max - (|Omega_t| - min|Omega|) (w_max - w_min) / (max|Omega| - min|Omega|)
              (min / max over the term's tokens; constant, no gradient)
        l_t = w_t * max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))
              (dual clip min(., -c A_t) for A_t < 0)

    Paper: "Rethinking Entropy Interventions in RLVR: An Entropy Change Perspective" (Hao,
    Wang et al., 2025), Stabilizing Token-level Entropy-changE via Reweighting.

    Defaults: w in [0.8, 1.2] with the linear map, dual clip c = 3 (the authors' release);
    eps_low = 0.2, eps_high = 0.28 follow this library's ppo_clip. Needs ``batch.entropy``.
    Metrics: ``weight_mean``, ``weight_min``, ``clip_fraction``.

    Args:
        w_min: weight of the token with the largest |Omega|, 0 <= w_min <= w_max.
        w_max: weight of the token with the smallest |Omega|.
        eps_low: lower clip width, > 0.
        eps_high: upper clip width, > 0.
        dual_clip: dual-clip constant c > 1, or None for no dual clip.
        coef: weight of the term in the composed loss.

    Returns:
        A per-token :class:`Term` named ``"steer"``.
    """
    check_positive(eps_low, "eps_low")
    check_positive(eps_high, "eps_high")
    steer_token_weights(jnp.zeros((1, 1)), jnp.ones((1, 1)), w_min, w_max)  # validates w range

    def fn(batch: PolicyBatch, mask):
        entropy = batch.require("entropy", "steer")
        score = entropy_change_score(batch.logp, batch.old_logp, batch.advantages, entropy)
        weights = steer_token_weights(score, mask, w_min, w_max)
        loss, is_clipped, _ = clipped_surrogate(
            policy_ratio(batch), batch.advantages, eps_low, eps_high, dual_clip
        )
        metrics = {
            "weight_mean": masked_mean(weights, mask),
            "weight_min": jnp.min(jnp.where(mask > 0, weights, jnp.inf)),
            "clip_fraction": masked_mean(is_clipped.astype(jnp.float32), mask),
        }
        return weights * loss, metrics

    return Term("steer", fn, coef=coef)
