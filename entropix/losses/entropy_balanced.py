"""Entropy-balanced policy optimisation: keep the gradient of tokens clipped at the upper bound.

Paper: "Agentic Entropy-Balanced Policy Optimization" (Dong et al., 2025), AEPO for web agents.
The upper clip of PPO zeroes the gradient of positive-advantage tokens whose ratio has already
grown past 1 + eps_high; these are mostly low-probability, high-entropy tokens (tool calls,
forks), so clipping suppresses exactly the exploration signal. Writing the clipped branch as
sg((1 + eps_high) / r) * r keeps its value but lets a rescaled gradient through.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import masked_mean
from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.objectives import clipped_surrogate, policy_ratio
from entropix.losses.registry import register
from entropix.validation import check_positive


def entropy_balanced_surrogate(
    ratio: jax.Array, advantages: ArrayLike, eps_low: float, eps_high: float
) -> tuple[jax.Array, jax.Array]:
    """Per-token clipped surrogate with a stop-gradient upper branch; returns (loss, upper).

    Formula:
        upper_t = A_t > 0 and r_t > 1 + eps_high
        l_t = -A_t sg((1 + eps_high) / r_t) r_t                       if upper_t
            = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))  otherwise
    Value: identical to the clipped surrogate. Gradient on upper tokens:
    -(1 + eps_high) A_t grad log pi(y_t) instead of 0.

    Args:
        ratio: [B, T] float, the importance ratio r_t (:func:`policy_ratio`).
        advantages: [B, T] float, per-token advantages.
        eps_low: lower clip width, 0 < eps_low < 1.
        eps_high: upper clip width, > 0.

    Returns:
        ``(loss, upper)``: float32 [B, T] per-token loss and the bool [B, T] mask of the
        tokens on the rescaled upper branch.
    """
    adv = jnp.asarray(advantages, jnp.float32)
    loss, _, _ = clipped_surrogate(ratio, adv, eps_low, eps_high)
    upper = (adv > 0) & (ratio > 1.0 + eps_high)
    scale = jax.lax.stop_gradient((1.0 + eps_high) / jnp.where(upper, ratio, 1.0))
    return jnp.where(upper, -adv * scale * ratio, loss), upper


@register(
    "entropy_balanced_clip",
    paper="Agentic Entropy-Balanced Policy Optimization",
    kind="intervention",
)
def entropy_balanced_clip(eps_low: float = 0.2, eps_high: float = 0.28, coef: float = 1.0) -> Term:
    """AEPO entropy-balanced clipping: stop-gradient rescaling instead of zeroing the upper clip.

    Formula:
        r_t = exp(logp_t - old_logp_t)
        l_t = -A_t sg((1 + eps_high) / r_t) r_t         if A_t > 0 and r_t > 1 + eps_high
            = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))   otherwise

    Paper: "Agentic Entropy-Balanced Policy Optimization" (Dong et al., 2025).

    Defaults: eps_low = 0.2, eps_high = 0.28 (DAPO's Clip-Higher bounds, as in this library's
    ppo_clip; the paper's values were not available to us). Only the upper,
    entropy-suppressing branch is changed; the lower clip and the paper's entropy-aware
    advantage and rollout mechanisms are not part of this term.
    Metrics: ``upper_fraction`` (tokens on the rescaled branch), ``ratio_mean``.

    Args:
        eps_low: lower clip width, > 0.
        eps_high: upper clip width, > 0.
        coef: weight of the term in the composed loss.

    Returns:
        A per-token :class:`Term` named ``"entropy_balanced"``.
    """
    check_positive(eps_low, "eps_low")
    check_positive(eps_high, "eps_high")

    def fn(batch: PolicyBatch, mask):
        ratio = policy_ratio(batch)
        loss, upper = entropy_balanced_surrogate(ratio, batch.advantages, eps_low, eps_high)
        metrics = {
            "upper_fraction": masked_mean(upper.astype(jnp.float32), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
        return loss, metrics

    return Term("entropy_balanced", fn, coef=coef)
