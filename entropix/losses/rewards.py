"""Entropy-based reward shaping: PEAR's phase-entropy reward and R3's entropy ranking reward.

Both map per-response rewards [B] and per-token entropies [B, T] to new rewards [B], applied
before advantages are computed. Entropies are treated as constants (rewards carry no gradient).
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import masked_mean
from entropix.losses.registry import register
from entropix.validation import check_floating, check_mask, check_rank, check_shape


def _check_reward_inputs(rewards, entropy, mask):
    check_floating(rewards, "rewards")
    check_rank(rewards, "rewards", 1)
    check_floating(entropy, "entropy")
    check_shape(entropy, "entropy", (rewards.shape[0], None))
    check_mask(mask, "mask", entropy.shape)
    return jnp.asarray(rewards, jnp.float32), jax.lax.stop_gradient(entropy)


@register("pear", paper="PEAR: Phase Entropy Aware Reward for Efficient Reasoning", kind="reward")
def pear_rewards(
    rewards: ArrayLike,
    entropy: ArrayLike,
    mask: ArrayLike,
    answer_mask: ArrayLike,
    alpha: float = 1.0,
    beta: float = 0.5,
) -> jax.Array:
    """PEAR: penalise thinking-phase entropy, tolerate answer-phase entropy, in the reward.

    Formula:
        (thinking tokens: mask & ~answer_mask, before </think>; answer tokens: after it)
        Hbar_think = mean token entropy over the thinking tokens of the response
        Hbar_ans   = mean token entropy over the answer tokens
        R' = R - alpha * max(Hbar_think - beta * Hbar_ans, 0)

    Paper: "PEAR: Phase Entropy Aware Reward for Efficient Reasoning" (Huang, Lu, Zhang, 2025).
    The paper ties response length to thinking-phase entropy and rewards low thinking entropy
    while allowing moderate answer-phase exploration.

    Defaults: alpha = 1.0, beta = 0.5: our choice, the published weights were not available to
    us; the penalty is floored at 0 so an exploratory answer phase never raises the reward
    above the task reward.

    ``rewards`` [B], ``entropy`` / ``mask`` / ``answer_mask`` [B, T] (``answer_mask`` is 1 on
    answer-phase tokens). Returns the shaped rewards [B].

    Args:
        rewards: [B] float, the task reward of each response.
        entropy: [B, T] float, per-token policy entropy (nats); no gradient.
        mask: [B, T] 0/1 mask of the response tokens.
        answer_mask: [B, T] 0/1, 1 on the answer-phase tokens (after ``</think>``).
        alpha: weight of the thinking-entropy penalty.
        beta: share of the answer-phase entropy tolerated before the penalty starts.

    Returns:
        float32 [B], the shaped rewards R'.
    """
    r, h = _check_reward_inputs(rewards, entropy, mask)
    check_mask(answer_mask, "answer_mask", h.shape)
    valid = mask.astype(bool)
    answer = valid & answer_mask.astype(bool)
    h_think = masked_mean(h, valid & ~answer, axis=-1)
    h_answer = masked_mean(h, answer, axis=-1)
    return r - alpha * jnp.maximum(h_think - beta * h_answer, 0.0)


def structural_entropy_score(
    entropy: ArrayLike, mask: ArrayLike, top_fraction: float = 0.2, stability: float = 1.0
) -> jax.Array:
    """R3 structural score per response: local exploration peaks minus global instability.

    Formula:
        (per response, over its valid tokens)
        local  = mean of the top ceil(top_fraction * n) token entropies
        global = mean token entropy
        s = local - stability * global

    Args:
        entropy: [B, T] float, per-token policy entropy (nats).
        mask: [B, T] 0/1 mask of the response tokens.
        top_fraction: share of each response's tokens in the local peak mean, in (0, 1].
        stability: weight of the global-instability term.

    Returns:
        float32 [B], the structural score s of each response.
    """
    check_mask(mask, "mask", jnp.shape(entropy))
    valid = mask.astype(bool)
    n = jnp.sum(valid, axis=-1)
    k = jnp.maximum(jnp.ceil(top_fraction * n), 1.0)
    ordered = -jnp.sort(-jnp.where(valid, entropy, -jnp.inf), axis=-1)
    in_top = jnp.arange(entropy.shape[-1])[None, :] < k[:, None]
    local = jnp.sum(jnp.where(in_top & jnp.isfinite(ordered), ordered, 0.0), -1) / k
    return local - stability * masked_mean(entropy, mask, axis=-1)


@register(
    "r3",
    paper="R^3: Replay, Reflection, and Ranking Rewards for LLM Reinforcement Learning",
    kind="reward",
)
def r3_rewards(
    rewards: ArrayLike,
    entropy: ArrayLike,
    mask: ArrayLike,
    group_ids: ArrayLike,
    max_bonus: float = 0.1,
    success_threshold: float = 0.5,
    top_fraction: float = 0.2,
) -> jax.Array:
    """R3 ranking reward: order a group's failed responses by a structural entropy score.

    Formula:
        (group g; F = failed responses of g, R_i <= success_threshold; s = score)
        s_i = mean of the top-20% token entropies - mean token entropy  (structural_entropy_score)
        rank_i = #{j in F : s_j < s_i or (s_j = s_i and j < i)}        for i in F
        R'_i = R_i + max_bonus * rank_i / max(|F| - 1, 1)             for i in F
        R'_i = R_i                                                     otherwise

    Paper: "R^3: Replay, Reflection, and Ranking Rewards for LLM Reinforcement Learning" (Jiang
    et al., 2026). The paper ranks truncated or failed responses by token-entropy patterns that
    capture local exploration and global stability so that all-failed groups still carry an
    advantage signal.

    Defaults: max_bonus = 0.1, success_threshold = 0.5, top_fraction = 0.2 are our choices (the
    paper's exact score and scale were not available to us). Bonuses stay below the gap to a
    correct response (reward 1) so ranking never overturns correctness.

    ``rewards`` [B], ``entropy`` / ``mask`` [B, T], ``group_ids`` [B]. Returns rewards' [B].

    Args:
        rewards: [B] float, the task reward of each response.
        entropy: [B, T] float, per-token policy entropy (nats); no gradient.
        mask: [B, T] 0/1 mask of the response tokens.
        group_ids: [B] integer, the prompt group of each response.
        max_bonus: bonus of the best-ranked failed response of a group.
        success_threshold: a response with reward <= it counts as failed.
        top_fraction: share of tokens in the score's local peak mean, in (0, 1].

    Returns:
        float32 [B], the shaped rewards R'.
    """
    r, h = _check_reward_inputs(rewards, entropy, mask)
    check_shape(group_ids, "group_ids", r.shape)
    score = structural_entropy_score(h, mask, top_fraction)
    failed = r <= success_threshold
    idx = jnp.arange(r.shape[0])
    peers = (group_ids[:, None] == group_ids[None, :]) & failed[None, :] & failed[:, None]
    below = (score[None, :] < score[:, None]) | (
        (score[None, :] == score[:, None]) & (idx[None, :] < idx[:, None])
    )
    rank = jnp.sum(peers & below, axis=-1)
    count = jnp.sum(peers, axis=-1)
    return r + jnp.where(failed, max_bonus * rank / jnp.maximum(count - 1, 1), 0.0)
