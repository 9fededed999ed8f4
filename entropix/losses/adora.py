"""ADORA: attenuate the advantages of groups whose correct answers are not the longer ones.

Paper: "ADORA: Training Reasoning Models with Dynamic Advantage Estimation on Reinforcement
Learning" (Ren, Huang et al., 2025/2026; Advantage Dynamics via Online Rollout Adaptation).
Each step the rollouts of a prompt are sorted into temporarily advantageous samples (TAS) and
disadvantageous ones (TDS) by a utility criterion; the TDS groups' advantages are down-weighted
so the policy learns mostly from the informative groups. The LLM recipe's criterion is length:
a group is advantageous when its longest correct response is longer than its wrong ones on
average (long, reflective reasoning pays off on that prompt).
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.losses.registry import register
from entropix.validation import check_floating, check_mask, check_rank, check_shape


def length_advantage(
    rewards: ArrayLike, mask: ArrayLike, group_ids: ArrayLike, success_threshold: float = 1.0
) -> jax.Array:
    """Bool [B]: the response's group has max correct length > mean wrong, untruncated length.

    Formula:
        L_i = sum_t m_{i,t};  correct_i = r_i >= success_threshold
        wrong_i = not correct_i and L_i < T                (a reply filling T is truncated)
        TAS_g = max_{i in g, correct} L_i > mean_{i in g, wrong} L_i   (-inf for an empty set)

    Args:
        rewards: [B] float, the scalar reward of each response.
        mask: [B, T] 0/1 mask of the response tokens (gives the lengths).
        group_ids: [B] integer, the prompt group of each response.
        success_threshold: a response with reward >= it counts as correct.

    Returns:
        Bool [B], True for the responses of TAS groups.
    """
    check_floating(rewards, "rewards")
    check_rank(rewards, "rewards", 1)
    check_rank(mask, "mask", 2)
    check_mask(mask, "mask", (rewards.shape[0], mask.shape[1]))
    check_shape(group_ids, "group_ids", rewards.shape)
    length = jnp.sum(mask.astype(jnp.float32), axis=-1)
    correct = rewards >= success_threshold
    wrong = ~correct & (length < mask.shape[-1])
    same = group_ids[:, None] == group_ids[None, :]
    longest = jnp.max(jnp.where(same & correct[None, :], length[None, :], -jnp.inf), axis=-1)
    wrong_rows = (same & wrong[None, :]).astype(jnp.float32)
    count = jnp.sum(wrong_rows, axis=-1)
    mean_wrong = jnp.where(count > 0, wrong_rows @ length / jnp.maximum(count, 1.0), -jnp.inf)
    return longest > mean_wrong


@register(
    "adora",
    paper="ADORA: Training Reasoning Models with Dynamic Advantage Estimation on Reinforcement "
    "Learning",
    kind="advantage",
)
def adora_advantages(
    advantages: ArrayLike,
    rewards: ArrayLike,
    mask: ArrayLike,
    group_ids: ArrayLike,
    lamda: float = 0.1,
    success_threshold: float = 1.0,
) -> jax.Array:
    """ADORA: keep the advantages of TAS groups, scale those of TDS groups by lambda.

    Formula:
        TAS_g = max length of g's correct responses > mean length of g's untruncated wrong ones
        A'_i = A_i          if TAS_{g(i)}
             = lambda A_i   otherwise
        (A: the previous shaper's advantage, GRPO in the paper)

    Paper: "ADORA: Training Reasoning Models with Dynamic Advantage Estimation on Reinforcement
    Learning" (Ren, Huang et al.), the length-advantage weighting of the LLM recipe.

    Defaults: lambda = 0.1 (the authors' release), applied after GRPO. Our choices: a correct
    response is r >= 1 (the release's threshold sits just above its format reward); a wrong
    reply that fills the whole response budget counts as truncated and is left out of the
    mean (the release's max-length filter); a group without a correct or without an
    untruncated wrong response is TDS (the release's -inf convention; its GRPO advantage is
    zero or near zero anyway). The paper's difficulty criterion (for VLMs, amplification
    instead of attenuation) is not included. ``advantages`` [B] or [B, T].

    Args:
        advantages: [B] or [B, T] float, the previous shaper's advantages (no gradient).
        rewards: [B] float, the scalar reward of each response.
        mask: [B, T] 0/1 mask of the response tokens.
        group_ids: [B] integer, the prompt group of each response.
        lamda: attenuation lambda of the TDS groups, in [0, 1].
        success_threshold: a response with reward >= it counts as correct.

    Returns:
        float32 array of ``advantages``' shape, the weighted advantages.
    """
    if not 0.0 <= lamda <= 1.0:
        raise ValueError(f"lamda must lie in [0, 1] (it attenuates); got {lamda}")
    check_rank(advantages, "advantages", (1, 2))
    tas = length_advantage(jnp.asarray(rewards, jnp.float32), mask, group_ids, success_threshold)
    weight = jnp.where(tas, 1.0, lamda)
    adv = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))
    return adv * (weight if adv.ndim == 1 else weight[:, None])
