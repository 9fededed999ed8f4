"""CANON: conditional advantage estimation that regroups each prompt's responses by a metric.

Paper: "Conditional Advantage Estimation for Reinforcement Learning in Large Reasoning Models"
(Chen et al., 2025). Within each prompt group the responses are sorted by a target metric (here
their mean token entropy) and split into a lower and an upper half. The inter-group advantage
compares a response with the mean reward of the *other* half (which metric trend pays off); the
intra-group advantage compares it with its *own* half (which response is best given the trend).
Dr. GRPO's r - mean(r) is exactly their average, mu = 1/2.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.losses.registry import register
from entropix.validation import check_floating, check_rank, check_shape


def metric_halves(metric: ArrayLike, group_ids: ArrayLike) -> jax.Array:
    """Bool [B]: True for responses in the upper half of their group by ``metric``.

    Formula:
        rank_i  = #{j in g_i : m_j < m_i or (m_j = m_i and j < i)},   n_g = |g_i|
        upper_i = rank_i >= floor(n_g / 2)   (the lower half has floor(n/2) members; ties by index)

    Args:
        metric: [B] float, the metric each response is ranked by.
        group_ids: [B] integer, the prompt group of each response.

    Returns:
        Bool [B], True for the upper half of each group.
    """
    b = jnp.shape(metric)[0]
    idx = jnp.arange(b)
    same = group_ids[:, None] == group_ids[None, :]
    before = (metric[None, :] < metric[:, None]) | (
        (metric[None, :] == metric[:, None]) & (idx[None, :] < idx[:, None])
    )
    rank = jnp.sum(same & before, axis=-1)
    size = jnp.sum(same, axis=-1)
    return rank >= size // 2


@register(
    "canon",
    paper="Conditional Advantage Estimation for Reinforcement Learning in Large Reasoning Models",
    kind="advantage",
)
def canon_advantages(
    rewards: ArrayLike, group_ids: ArrayLike, metric: ArrayLike, mu: float = 1.0, alpha: float = 1.0
) -> jax.Array:
    """CANON advantages [B] from rewards [B], group ids [B] and a per-response metric [B].

    Formula:
        (each group split by the metric: lower floor(n/2) responses, upper the rest)
        own = mean reward of the response's half, other = mean reward of the other half
        A_inter = alpha * r - other  (upper half),   A_inter = r - alpha * other  (lower half)
        A_intra = r - own
        A = mu * A_inter + (1 - mu) * A_intra

    Paper: "Conditional Advantage Estimation for Reinforcement Learning in Large Reasoning
    Models" (Chen et al., 2025).

    Defaults: mu = 1 (pure inter-group comparison) and alpha = 1 (no preferred direction), the
    defaults of the authors' release; the paper also schedules mu over training. The metric for
    entropy-conditioned CANON is each response's mean token entropy,
    ``masked_mean(entropy, mask, axis=-1)``; response length is the paper's other metric.
    Singleton groups get A = 0, like the other advantage shapers. Pair with the Dr. GRPO
    aggregation (no std division).

    Args:
        rewards: [B] float, the scalar reward of each response.
        group_ids: [B] integer, the prompt group of each response.
        metric: [B] float, the metric the groups are split by (e.g. mean token entropy).
        mu: weight of the inter-group advantage (1 - mu goes to the intra-group one).
        alpha: direction preference of the inter-group advantage (1: none).

    Returns:
        float32 [B], the advantage of each response (0 for a singleton group).
    """
    check_floating(rewards, "rewards")
    check_rank(rewards, "rewards", 1)
    b = rewards.shape[0]
    check_shape(group_ids, "group_ids", (b,))
    check_shape(metric, "metric", (b,))
    r = jnp.asarray(rewards, jnp.float32)
    upper = metric_halves(jnp.asarray(metric, jnp.float32), group_ids)
    same = group_ids[:, None] == group_ids[None, :]

    def half_mean(member):  # [B, B] bool: j counts for row i
        w = (same & member).astype(jnp.float32)
        count = jnp.sum(w, axis=-1)
        return jnp.where(count > 0, (w @ r) / jnp.maximum(count, 1.0), 0.0)

    same_half = upper[:, None] == upper[None, :]
    own, other = half_mean(same_half), half_mean(~same_half)
    inter = jnp.where(upper, alpha * r - other, r - alpha * other)
    advantages = mu * inter + (1.0 - mu) * (r - own)
    return jnp.where(jnp.sum(same, axis=-1) > 1, advantages, 0.0)
