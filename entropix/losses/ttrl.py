"""Test-time RL without labels: majority-vote rewards (TTRL, EVOL-RL) and ETTRL's entropy-based
advantage reshaping.

The rewards read each reply's answer id (``answers`` [B] int: equal ids are equal answers, -1 =
no answer; the RL trainer extracts them without the label, ``task.answer``) and never the task
reward: they are reward sources, listed first in ``loss.rewards``. Everything is jit-able; the
group statistics use a [B, B] same-group matrix like the advantage shapers.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.losses.registry import register
from entropix.validation import check_mask, check_positive, check_rank, check_shape


def _check_answers(answers, group_ids):
    check_rank(answers, "answers", 1)
    check_shape(group_ids, "group_ids", answers.shape)
    for x, name in ((answers, "answers"), (group_ids, "group_ids")):
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(f"{name} must be integer ids (got {jnp.result_type(x)})")


def majority_mask(answers: ArrayLike, group_ids: ArrayLike) -> jax.Array:
    """bool [B]: the reply's answer is its group's majority answer.

    Formula:
        votes_i = #{j in g(i): a_j = a_i}  (answers a >= 0 only; a = -1 never votes)
        majority answer of g = the answer with most votes; ties: the one whose first reply
        comes first in the batch; a group with no answer has no majority

    Args:
        answers: [B] integer answer id of each reply (-1: no answer).
        group_ids: [B] integer, the prompt group of each reply.

    Returns:
        Bool [B], True for the replies giving their group's majority answer.
    """
    _check_answers(answers, group_ids)
    b = answers.shape[0]
    valid = answers >= 0
    same = group_ids[:, None] == group_ids[None, :]
    agree = same & (answers[:, None] == answers[None, :]) & valid[:, None] & valid[None, :]
    votes = jnp.sum(agree, axis=1)
    index = jnp.arange(b)
    first = jnp.min(jnp.where(agree, index[None, :], b), axis=1)
    top = jnp.max(jnp.where(same, votes[None, :], 0), axis=1)
    candidate = valid & (votes == top)
    winner = jnp.min(jnp.where(same & candidate[None, :], first[None, :], b), axis=1)
    return candidate & (first == winner)


@register("ttrl", paper="TTRL: Test-Time Reinforcement Learning", kind="reward")
def ttrl_rewards(answers: ArrayLike, group_ids: ArrayLike) -> jax.Array:
    """TTRL: reward 1 for a reply whose answer is its group's majority vote, 0 otherwise.

    Formula:
        y_hat_g = argmax_y #{i in g: a_i = y}   (ties: the answer that appears first)
        r_i = 1[a_i = y_hat_g]                    (a reply without an answer: r_i = 0)

    Paper: TTRL: Test-Time Reinforcement Learning (Zuo et al., 2025).

    Defaults: none. The paper votes over 64 samples per prompt and trains on a subsample of
    them; here the vote and the update use the same G rows of the group (our choice: one
    batch, so the vote costs no extra sampling). Ties go to the answer seen first, like
    ``Counter.most_common`` in the authors' code. Labels are never read: the task reward the
    trainer passes is replaced.

    Args:
        answers: [B] integer answer id of each reply (-1: no answer).
        group_ids: [B] integer, the prompt group of each reply.

    Returns:
        float32 [B], the 0/1 rewards.
    """
    return majority_mask(answers, group_ids).astype(jnp.float32)


def hashed_token_embeddings(tokens: ArrayLike, mask: ArrayLike, buckets: int) -> jax.Array:
    """L2-normalised bag-of-tokens counts ``[B, buckets]`` (token id mod buckets) of the valid
    tokens of each response (a zero row stays zero).

    Args:
        tokens: [B, T] integer token ids.
        mask: [B, T] 0/1 mask of the tokens counted.
        buckets: number of hash bins, >= 1.

    Returns:
        float32 [B, buckets], the unit-norm (or zero) count vectors.
    """
    check_mask(mask, "mask", jnp.shape(tokens))
    b = tokens.shape[0]
    rows = jnp.broadcast_to(jnp.arange(b)[:, None], tokens.shape)
    counts = (
        jnp.zeros((b, buckets), jnp.float32)
        .at[rows, tokens % buckets]
        .add(mask.astype(jnp.float32))
    )
    norm = jnp.sqrt(jnp.sum(counts * counts, axis=1, keepdims=True))
    return counts / jnp.maximum(norm, 1e-12)


def _subset_minmax(values, members, same):
    """(v - min) / (max - min) over each row's subset (same group & members); 0.5 where the
    subset has no spread."""
    peers = same & members[None, :]
    low = jnp.min(jnp.where(peers, values[None, :], jnp.inf), axis=1)
    high = jnp.max(jnp.where(peers, values[None, :], -jnp.inf), axis=1)
    spread = high - low
    return jnp.where(spread > 1e-12, (values - low) / jnp.where(spread > 1e-12, spread, 1.0), 0.5)


@register(
    "evol_rl",
    paper="Evolving Language Models without Labels: Majority Drives Selection, Novelty "
    "Promotes Variation",
    kind="reward",
)
def evol_rl_rewards(
    answers: ArrayLike,
    group_ids: ArrayLike,
    tokens: ArrayLike,
    mask: ArrayLike,
    alpha: float = 0.5,
    buckets: int = 4096,
) -> jax.Array:
    """EVOL-RL: the majority vote selects (majority replies score above every other), a
    novelty score orders replies inside each side.

    Formula:
        e_i = bag-of-tokens vector of reply i (hashed, L2-normalised); s_ij = <e_i, e_j>
        sbar_i = mean_{j in g, j != i} s_ij,  smax_i = max_{j in g, j != i} s_ij
        u_i = 1 - (alpha sbar_i + (1 - alpha) smax_i)                  (novelty)
        u~_i = min-max of u_i within its side (majority / minority) of the group
        r_i = 0.5 + 0.5 u~_i   majority answer;   r_i = -1 + 0.5 u~_i   other answer
        r_i = -1               no answer

    Paper: Evolving Language Models without Labels: Majority Drives Selection, Novelty
    Promotes Variation (Zhou et al., 2025).

    Defaults: alpha = 0.5 (the mean and the max similarity weigh equally), the reward bands
    [0.5, 1] for the majority and [-1, -0.5] for the minority, as we read the paper. Our
    choices: the paper embeds the reasoning text with a sentence encoder; we use the cosine of
    hashed bag-of-token counts of the whole reply (``buckets`` bins; exact for vocabularies up
    to 4096), so no second model is needed; a side with no spread (or one member) gets u~ =
    0.5; a reply alone in its group has sbar = smax = 0. EVOL-RL pairs it with clip-higher and
    an entropy term: ``loss.terms: [{name: clip_higher}, {name: entropy_bonus}]``.

    Args:
        answers: [B] integer answer id of each reply (-1: no answer).
        group_ids: [B] integer, the prompt group of each reply.
        tokens: [B, T] integer token ids of the replies.
        mask: [B, T] 0/1 mask of the reply tokens.
        alpha: weight in [0, 1] of the mean similarity against the max in the novelty.
        buckets: number of hash bins of the token embeddings, >= 1.

    Returns:
        float32 [B], the rewards in [0.5, 1] (majority) or [-1, -0.5] (other), -1 without an
        answer.
    """
    check_positive(buckets, "buckets")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    check_rank(tokens, "tokens", 2)
    check_shape(tokens, "tokens", (answers.shape[0], None))
    majority = majority_mask(answers, group_ids)
    valid = answers >= 0
    emb = hashed_token_embeddings(tokens, mask, buckets)
    sim = emb @ emb.T
    b = answers.shape[0]
    same = group_ids[:, None] == group_ids[None, :]
    others = same & ~jnp.eye(b, dtype=bool)
    count = jnp.sum(others, axis=1)
    mean_sim = jnp.sum(jnp.where(others, sim, 0.0), axis=1) / jnp.maximum(count, 1)
    max_sim = jnp.where(count > 0, jnp.max(jnp.where(others, sim, -jnp.inf), axis=1), 0.0)
    novelty = jax.lax.stop_gradient(1.0 - (alpha * mean_sim + (1.0 - alpha) * max_sim))
    minority = valid & ~majority
    scaled = jnp.where(
        majority,
        _subset_minmax(novelty, majority, same),
        _subset_minmax(novelty, minority, same),
    )
    return jnp.where(majority, 0.5 + 0.5 * scaled, jnp.where(valid, -1.0 + 0.5 * scaled, -1.0))


@register(
    "ettrl_ear",
    paper="ETTRL: Balancing Exploration and Exploitation in LLM Test-Time Reinforcement "
    "Learning Via Entropy Mechanism",
    kind="advantage",
)
def ettrl_ear(
    advantages: ArrayLike,
    metric: ArrayLike,
    group_ids: ArrayLike,
    alpha: float = 1.0,
    low: float = 0.5,
    high: float = 1.5,
) -> jax.Array:
    """ETTRL's Entropy-based Advantage Reshaping (EAR): scale a positive advantage by the
    reply's entropy relative to its group, so confident replies reinforce less.

    Formula:
        (Hbar_i: mean token entropy of reply i, ``metric``; mean over its group g)
        w_i = clip((Hbar_i / mean_g Hbar)^alpha, low, high)    (w_i = 1 if mean_g Hbar = 0)
        A'_i = w_i A_i  if A_i > 0,   A'_i = A_i  otherwise

    Paper: ETTRL: Balancing Exploration and Exploitation in LLM Test-Time Reinforcement
    Learning Via Entropy Mechanism (Liu et al., 2025): EAR counters the overconfidence that
    early majority pseudo-labels breed by reshaping advantages with response entropy.

    Defaults: alpha = 1, bounds [0.5, 1.5]: our choices, the paper's exact reshaping was not
    available to us. Our choice: only positive advantages are reshaped (pushing down a
    confident minority reply already lowers confidence). Reshapes advantages: list it after
    a shaper, ``loss.advantage: [{name: grpo}, {name: ettrl_ear}]``; [B] or [B, N] advantages.

    Args:
        advantages: [B] or [B, N] float, the previous shaper's advantages.
        metric: [B] float, each reply's mean token entropy Hbar_i (no gradient).
        group_ids: [B] integer, the prompt group of each reply.
        alpha: > 0, exponent of the entropy ratio.
        low: lower clip of the weight, 0 < low <= 1.
        high: upper clip of the weight, >= 1.

    Returns:
        float32 array of ``advantages``' shape, the reshaped advantages.
    """
    check_positive(alpha, "alpha")
    if not 0.0 < low <= 1.0 <= high:
        raise ValueError(f"the bounds must satisfy 0 < low <= 1 <= high; got {low}, {high}")
    check_rank(metric, "metric", 1)
    check_shape(group_ids, "group_ids", metric.shape)
    h = jax.lax.stop_gradient(jnp.asarray(metric, jnp.float32))
    same = (group_ids[:, None] == group_ids[None, :]).astype(jnp.float32)
    mean = same @ h / jnp.sum(same, axis=1)
    ratio = jnp.where(mean > 0, h / jnp.where(mean > 0, mean, 1.0), 1.0)
    weight = jnp.clip(ratio**alpha, low, high)
    adv = jnp.asarray(advantages, jnp.float32)
    if adv.ndim == 2:
        weight = weight[:, None]
    return jnp.where(adv > 0, weight * adv, adv)
