"""Clipped policy-gradient surrogate (PPO / GRPO) with asymmetric and dual clipping.

Per-token loss (minimised; r = exp(logp - old_logp), A = advantage):

    l = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))
    dual clip, tokens with A < 0 only:  l = min(l, -c A)

How tokens are averaged into one scalar (token-mean, seq-mean-token-mean, ...) is the
aggregation mode of :func:`~entropix.losses.compose.compose`.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import masked_mean
from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.registry import register
from entropix.validation import check_positive


def policy_ratio(batch: PolicyBatch) -> jax.Array:
    """Importance ratio r = exp(logp - old_logp) per token, float32 [B, T].

    Args:
        batch: the policy batch (reads ``logp`` and ``old_logp``).

    Returns:
        float32 [B, T], the per-token importance ratio (differentiable through ``logp``).
    """
    log_ratio = jnp.asarray(batch.logp, jnp.float32) - jnp.asarray(batch.old_logp, jnp.float32)
    return jnp.exp(log_ratio)


def clipped_surrogate(
    ratio: ArrayLike,
    advantages: ArrayLike,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-token clipped surrogate loss and the bool masks of clipped / dual-clipped tokens.

    Args:
        ratio: [B, T] float, the importance ratio r (see :func:`policy_ratio`).
        advantages: [B, T] float, the advantage of each token.
        eps_low: lower clip width, the ratio is clipped at 1 - eps_low (0 < eps_low < 1).
        eps_high: upper clip width, the ratio is clipped at 1 + eps_high (> 0).
        dual_clip: the dual-clip constant c > 1 bounding the loss of A < 0 tokens by -c A;
            None turns dual clipping off.

    Returns:
        ``(loss, is_clipped, is_dual)``: float32 [B, T] per-token loss and bool [B, T] masks of
        the tokens on the clipped branch and of those dual-clipped (all False when off).
    """
    adv = jnp.asarray(advantages, jnp.float32)
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = jnp.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    if dual_clip is None:
        return loss, is_clipped, jnp.zeros_like(is_clipped)
    bound = -dual_clip * adv
    is_dual = (adv < 0) & (loss > bound)
    return jnp.where(is_dual, bound, loss), is_clipped & ~is_dual, is_dual


@register(
    "clip_higher",
    paper="DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
    kind="intervention",
)
@register("ppo_clip", paper="Proximal Policy Optimization Algorithms", kind="objective")
def ppo_clip(
    eps_low: float = 0.2, eps_high: float = 0.28, dual_clip: float | None = 3.0, coef: float = 1.0
) -> Term:
    """PPO/GRPO clipped surrogate with Clip-Higher (eps_low != eps_high) and dual-clip.

    Formula:
        r_t = exp(logp_t - old_logp_t)
        l_t = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))
        if A_t < 0 and dual_clip = c:  l_t = min(l_t, -c A_t)

    Paper: Proximal Policy Optimization Algorithms (Schulman et al., 2017); Clip-Higher from
    DAPO: An Open-Source LLM Reinforcement Learning System at Scale (Yu et al., 2025); dual-clip
    from Mastering Complex Control in MOBA Games with Deep Reinforcement Learning (Ye et al.,
    2020).

    Defaults: eps_low = 0.2, eps_high = 0.28 (DAPO's Clip-Higher; PPO used 0.2 on both sides),
    dual_clip c = 3 (the dual-clip paper); ``dual_clip=None`` turns it off. Metrics:
    ``clip_fraction`` (tokens on the clipped branch), ``dual_clip_fraction``, ``ratio_mean``.

    Args:
        eps_low: lower clip width, 0 < eps_low < 1.
        eps_high: upper clip width, > 0.
        dual_clip: dual-clip constant c > 1, or None for no dual clip.
        coef: weight of the term in the composed loss.

    Returns:
        A per-token :class:`Term` named ``"pg"``.
    """
    check_positive(eps_low, "eps_low")
    check_positive(eps_high, "eps_high")
    if eps_low >= 1.0:
        raise ValueError(f"eps_low must be < 1 (the lower bound 1 - eps_low > 0); got {eps_low}")
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1 (it bounds -A r from above); got {dual_clip}")

    def fn(batch: PolicyBatch, mask):
        ratio = policy_ratio(batch)
        loss, is_clipped, is_dual = clipped_surrogate(
            ratio, batch.advantages, eps_low, eps_high, dual_clip
        )
        metrics = {
            "clip_fraction": masked_mean(is_clipped.astype(jnp.float32), mask),
            "dual_clip_fraction": masked_mean(is_dual.astype(jnp.float32), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
        return loss, metrics

    return Term("pg", fn, coef=coef)
