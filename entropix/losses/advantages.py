"""Group-relative advantage shapers: ``(rewards [B], group_ids [B]) -> advantages [B]``.

Responses sampled from the same prompt share a ``group_id`` (any integers; groups need not be
contiguous or equally sized). Group statistics are computed with a [B, B] same-group matrix, so
the number of groups need not be static and everything jits. A response alone in its group
gets advantage 0 from every shaper (no baseline can be formed). Pass the result as
``advantages`` of :func:`~entropix.losses.batch.make_policy_batch` (broadcast over tokens).
"""

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri
from jax.typing import ArrayLike

from entropix.losses.registry import register
from entropix.validation import check_floating, check_positive, check_rank, check_shape


def _groups(rewards, group_ids):
    """float32 rewards, the same-group matrix S [B, B] (float) and the group sizes n [B]."""
    check_floating(rewards, "rewards")
    check_rank(rewards, "rewards", 1)
    check_shape(group_ids, "group_ids", rewards.shape)
    if not jnp.issubdtype(jnp.result_type(group_ids), jnp.integer):
        raise TypeError(f"group_ids must be integer (got {jnp.result_type(group_ids)})")
    r = jnp.asarray(rewards, jnp.float32)
    same = (group_ids[:, None] == group_ids[None, :]).astype(jnp.float32)
    return r, same, jnp.sum(same, axis=1)


def group_mean(rewards: ArrayLike, group_ids: ArrayLike) -> jax.Array:
    """Mean reward of each response's group, float32 [B].

    Args:
        rewards: [B] float, the scalar reward of each response.
        group_ids: [B] integer, the prompt group of each response.

    Returns:
        float32 [B], the mean reward of the group each response belongs to.
    """
    r, same, n = _groups(rewards, group_ids)
    return same @ r / n


@register(
    "grpo",
    paper="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
    kind="advantage",
)
def grpo_advantages(rewards: ArrayLike, group_ids: ArrayLike, eps: float = 1e-6) -> jax.Array:
    """GRPO outcome advantage: the reward standardised within its group.

    Formula:
        A_i = (r_i - mean_g(r)) / (std_g(r) + eps)
        std_g = sqrt( sum_{j in g} (r_j - mean_g)^2 / (n_g - 1) )   (unbiased)

    Paper: DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models
    (Shao et al., 2024).

    Defaults: eps = 1e-6. The paper does not say which standard deviation; we use the unbiased
    one (n_g - 1), as the common open implementations do. Singleton groups get A = 0.

    Args:
        rewards: [B] float, the scalar reward of each response.
        group_ids: [B] integer, the prompt group of each response (any integer labels).
        eps: > 0, added to the group std before dividing (guards all-equal groups).

    Returns:
        float32 [B], the advantage of each response (0 for a response alone in its group).
    """
    check_positive(eps, "eps")
    r, same, n = _groups(rewards, group_ids)
    centred = r - same @ r / n
    var = same @ (centred * centred) / jnp.maximum(n - 1.0, 1.0)
    return jnp.where(n > 1, centred / (jnp.sqrt(var) + eps), 0.0)


@register(
    "dr_grpo",
    paper="Understanding R1-Zero-Like Training: A Critical Perspective",
    kind="advantage",
)
def dr_grpo_advantages(rewards: ArrayLike, group_ids: ArrayLike) -> jax.Array:
    """Dr. GRPO advantage: the reward minus its group mean, with no std division.

    Formula:
        A_i = r_i - mean_g(r)

    Paper: Understanding R1-Zero-Like Training: A Critical Perspective (Liu et al., 2025).

    Defaults: none. Pair with the ``seq-mean-token-sum-norm`` aggregation (the paper's
    constant-normaliser fix of the length bias). Singleton groups get A = 0 (r_i - r_i).

    Args:
        rewards: [B] float, the scalar reward of each response.
        group_ids: [B] integer, the prompt group of each response (any integer labels).

    Returns:
        float32 [B], the advantage of each response (0 for a response alone in its group).
    """
    r, same, n = _groups(rewards, group_ids)
    return r - same @ r / n


@register(
    "rloo",
    paper="Buy 4 REINFORCE Samples, Get a Baseline for Free!",
    kind="advantage",
)
def rloo_advantages(rewards: ArrayLike, group_ids: ArrayLike) -> jax.Array:
    """RLOO advantage: the reward minus the mean reward of the other responses of its group.

    Formula:
        A_i = r_i - (1 / (n_g - 1)) sum_{j in g, j != i} r_j = n_g / (n_g - 1) (r_i - mean_g(r))

    Paper: Buy 4 REINFORCE Samples, Get a Baseline for Free! (Kool, van Hoof and Welling,
    2019); used for LLMs in Back to Basics: Revisiting REINFORCE Style Optimization for
    Learning from Human Feedback in LLMs (Ahmadian et al., 2024).

    Defaults: none. Singleton groups get A = 0.

    Args:
        rewards: [B] float, the scalar reward of each response.
        group_ids: [B] integer, the prompt group of each response (any integer labels).

    Returns:
        float32 [B], the advantage of each response (0 for a response alone in its group).
    """
    r, same, n = _groups(rewards, group_ids)
    others = (same @ r - r) / jnp.maximum(n - 1.0, 1.0)
    return jnp.where(n > 1, r - others, 0.0)


@register(
    "g2rpo",
    paper="OpenVLThinkerV2: A Generalist Multimodal Reasoning Model for Multi-domain Visual Tasks",
    kind="advantage",
)
def g2rpo_advantages(rewards: ArrayLike, group_ids: ArrayLike) -> jax.Array:
    """Gaussian GRPO (G2RPO) advantage: group ranks mapped onto standard-normal quantiles.

    Formula:
        s_k = Phi^-1( (k - 1/2) / n_g ),  k = 1..n_g          (normal scores of the ranks)
        A_i = s_{rank(i)};  tied rewards share the mean of the scores of the ranks they span:
        A_i = mean_{k = L_i + 1 .. L_i + E_i} s_k,  L_i = #{j in g: r_j < r_i},
                                                   E_i = #{j in g: r_j = r_i}

    Paper: OpenVLThinkerV2: A Generalist Multimodal Reasoning Model for Multi-domain Visual
    Tasks (Hu et al., 2026), "Gaussian GRPO": match each group's reward distribution to N(0, 1)
    by the 1-D optimal-transport (quantile) map.

    Defaults: none. Our choices where the description leaves details open: quantile levels at
    mid-ranks (k - 1/2)/n (Hazen positions, never 0 or 1); ties share the mean of their
    scores, which keeps every group's advantages summing to exactly 0 (so binary rewards stay
    balanced) and gives an all-equal group A = 0. Singleton groups get A = 0.

    Args:
        rewards: [B] float, the scalar reward of each response.
        group_ids: [B] integer, the prompt group of each response (any integer labels).

    Returns:
        float32 [B], the advantage of each response (0 for a response alone in its group).
    """
    r, same, n = _groups(rewards, group_ids)
    below = jnp.sum(same * (r[None, :] < r[:, None]), axis=1)
    ties = jnp.sum(same * (r[None, :] == r[:, None]), axis=1)
    k = jnp.arange(1, r.shape[0] + 1, dtype=jnp.float32)[None, :]
    spanned = (k > below[:, None]) & (k <= (below + ties)[:, None])
    scores = ndtri(jnp.clip((k - 0.5) / n[:, None], 0.0, 1.0))
    total = jnp.sum(jnp.where(spanned, scores, 0.0), axis=1)
    return jnp.where(n > 1, total / ties, 0.0)
