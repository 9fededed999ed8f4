"""GTPO: protect conflict tokens from negative updates and drop high-entropy completions.

Paper: "GTPO: Stabilizing Group Relative Policy Optimization via Gradient and Entropy Control"
(Simoni, Fontana et al., 2025; first titled "GTPO: Trajectory-Based Policy Optimization in Large
Language Models"). A conflict token is a token that appears at the same position in completions
of the same prompt that received advantages of opposite sign; GRPO pushes it up and down at
once. GTPO skips its negative update and amplifies its positive one, and removes completions
whose mean token entropy exceeds a threshold from the update.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import masked_mean
from entropix.losses.registry import register
from entropix.validation import check_mask, check_rank, check_shape


def sequence_advantages(advantages: ArrayLike, mask: ArrayLike) -> jax.Array:
    """One advantage per response: the masked mean of its per-token advantages [B, T] -> [B].

    Args:
        advantages: [B, T] float, per-token advantages.
        mask: [B, T] 0/1 mask of the response tokens.

    Returns:
        float32 [B], the mean advantage over each response's valid tokens.
    """
    return masked_mean(advantages, mask, axis=-1)


def conflict_tokens(
    tokens: ArrayLike, advantages: ArrayLike, mask: ArrayLike, group_ids: ArrayLike
) -> jax.Array:
    """Bool [B, T]: y_{b,t} also sits at position t of a same-group response of opposite sign.

    Formula:
        conflict[b, t] = exists j : g_j = g_b, y_{j,t} = y_{b,t}, m_{j,t} = m_{b,t} = 1,
                                    sign(A_j) = -sign(A_b) != 0
    ``tokens`` [B, T] int, ``advantages`` [B] per-response, ``mask`` [B, T], ``group_ids`` [B].
    Memory is O(B^2 T).

    Args:
        tokens: [B, T] integer, the sampled token ids.
        advantages: [B] float, one advantage per response.
        mask: [B, T] 0/1 mask of the response tokens.
        group_ids: [B] integer, the prompt group of each response.

    Returns:
        Bool [B, T], True at the conflict tokens (never on padding).
    """
    check_rank(tokens, "tokens", 2)
    if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
        raise TypeError(f"tokens must be integer token ids (got {jnp.result_type(tokens)})")
    b, t = tokens.shape
    check_shape(advantages, "advantages", (b,))
    check_mask(mask, "mask", (b, t))
    check_shape(group_ids, "group_ids", (b,))
    valid = mask.astype(bool)
    same_group = group_ids[:, None] == group_ids[None, :]
    opposite = jnp.sign(advantages)[:, None] * jnp.sign(advantages)[None, :] < 0
    pair = (same_group & opposite)[:, :, None]
    same_token = (tokens[:, None, :] == tokens[None, :, :]) & valid[:, None, :] & valid[None, :, :]
    return jnp.any(pair & same_token, axis=1)


def gtpo_token_weights(
    conflict: ArrayLike, advantages: ArrayLike, conflict_weight: float = 2.0
) -> jax.Array:
    """Per-token weights from the conflict mask [B, T] and per-response advantages [B].

    Formula:
        w[b, t] = conflict_weight  if conflict[b, t] and A_b > 0
                = 0                if conflict[b, t] and A_b < 0
                = 1                otherwise

    Args:
        conflict: [B, T] bool, the conflict tokens (:func:`conflict_tokens`).
        advantages: [B] float, one advantage per response.
        conflict_weight: >= 0, the weight of a conflict token of a positive response.

    Returns:
        float32 [B, T], the per-token weights w.
    """
    positive = (advantages > 0)[:, None]
    return jnp.where(conflict, jnp.where(positive, conflict_weight, 0.0), 1.0)


@register(
    "gtpo",
    paper="GTPO: Stabilizing Group Relative Policy Optimization via Gradient and Entropy Control",
    kind="advantage",
)
def gtpo_advantages(
    advantages: ArrayLike,
    tokens: ArrayLike,
    mask: ArrayLike,
    group_ids: ArrayLike,
    entropy: ArrayLike,
    conflict_weight: float = 2.0,
    entropy_threshold: float = 0.7,
    entropy_coef: float = 0.1,
) -> jax.Array:
    """GTPO advantages: conflict-token protection and a high-entropy completion filter.

    Formula:
        (A_b: advantage of response b, Hbar_b: its mean token entropy, both constants)
        w[b, t]  = conflict_weight if conflict[b, t] and A_b > 0; 0 if conflict and A_b < 0; else 1
        keep_b   = Hbar_b <= entropy_threshold
        A'[b, t] = keep_b * w[b, t] * (A_b - entropy_coef * Hbar_b)
        conflict[b, t]: y_{b,t} also sits at position t of a same-prompt response whose
        advantage has the opposite sign (:func:`conflict_tokens`)

    Paper: "GTPO: Stabilizing Group Relative Policy Optimization via Gradient and Entropy
    Control" (Simoni, Fontana et al., 2025).

    Defaults: conflict weight 2.0, entropy threshold 0.7 nats (about ln 2) and entropy shaping
    0.1, the values of the authors' release; no KL to a reference model. The release restricts
    conflicts to the runs of matching tokens at the start and end of completions; we use the
    paper's per-position definition.

    ``advantages`` is [B] or [B, T] (reduced to one value per response), ``tokens`` the sampled
    token ids [B, T], ``entropy`` [B, T]. Returns A' [B, T]: pass it as the advantages of the
    batch for ``ppo_clip``; since w >= 0, w * min(r A, clip(r) A) = min(r wA, clip(r) wA).

    Args:
        advantages: [B] or [B, T] float, the (e.g. GRPO) advantages; no gradient.
        tokens: [B, T] integer, the sampled token ids.
        mask: [B, T] 0/1 mask of the response tokens.
        group_ids: [B] integer, the prompt group of each response.
        entropy: [B, T] float, per-token policy entropy (nats); no gradient.
        conflict_weight: >= 0, the weight of a conflict token of a positive response.
        entropy_threshold: completions with mean entropy above it (nats) get A' = 0.
        entropy_coef: weight of the mean-entropy shaping subtracted from A_b.

    Returns:
        float32 [B, T], the shaped per-token advantages A' (0 on padding).
    """
    if conflict_weight < 0:
        raise ValueError(f"conflict_weight must be >= 0; got {conflict_weight}")
    check_rank(advantages, "advantages", (1, 2))
    check_mask(mask, "mask", jnp.shape(tokens))
    check_shape(entropy, "entropy", jnp.shape(tokens))
    seq_adv = advantages if advantages.ndim == 1 else sequence_advantages(advantages, mask)
    seq_adv = jax.lax.stop_gradient(jnp.asarray(seq_adv, jnp.float32))
    conflict = conflict_tokens(tokens, seq_adv, mask, group_ids)
    weights = gtpo_token_weights(conflict, seq_adv, conflict_weight)
    mean_entropy = jax.lax.stop_gradient(masked_mean(entropy, mask, axis=-1))
    shaped = jnp.where(
        mean_entropy <= entropy_threshold, seq_adv - entropy_coef * mean_entropy, 0.0
    )
    return weights * shaped[:, None] * mask.astype(jnp.float32)
