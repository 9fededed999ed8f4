"""UloRL: stop training on well-mastered positive tokens while the policy entropy is too low.

Paper: "UloRL: An Ultra-Long Output Reinforcement Learning Approach for Advancing Large Language
Models' Reasoning Abilities" (Du, Liu et al., 2025). A well-mastered positive token (MPT) is a
token of a positively rewarded response that the policy already predicts with probability at
least tau. Dynamic masking (DMMPT) removes MPTs from the loss only while the batch's mean token
entropy is below a target, so entropy is held near the target instead of collapsing.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import masked_mean
from entropix.losses.registry import register
from entropix.losses.selectors import Selector
from entropix.validation import check_mask, check_shape


def mastered_positive_tokens(
    logp: ArrayLike, advantages: ArrayLike, mask: ArrayLike, tau: float = 0.99
) -> jax.Array:
    """Bool [B, T]: valid tokens with A > 0 and pi(y_t) >= tau (no gradient).

    Args:
        logp: [B, T] float, the sampled tokens' log-probs under the current policy.
        advantages: [B, T] float, per-token advantages.
        mask: [B, T] 0/1 mask of the valid tokens.
        tau: probability threshold in (0, 1] of a mastered token.

    Returns:
        Bool [B, T], True at the mastered positive tokens.
    """
    check_shape(advantages, "advantages", jnp.shape(logp))
    check_mask(mask, "mask", jnp.shape(logp))
    p = jnp.exp(jax.lax.stop_gradient(jnp.asarray(logp, jnp.float32)))
    return mask.astype(bool) & (advantages > 0) & (p >= tau)


def ulorl_keep_mask(
    logp: ArrayLike,
    advantages: ArrayLike,
    entropy: ArrayLike,
    mask: ArrayLike,
    tau: float = 0.99,
    target_entropy: float = 0.2,
) -> jax.Array:
    """DMMPT selector: mask without the MPTs when mean token entropy < target, else unchanged.

    Formula:
        MPT[b, t] = m[b, t] & A[b, t] > 0 & pi(y_t) >= tau
        Hbar      = mean of H over the valid tokens of the batch
        keep      = m & ~MPT   if Hbar < target_entropy,   keep = m   otherwise

    Args:
        logp: [B, T] float, the sampled tokens' log-probs under the current policy.
        advantages: [B, T] float, per-token advantages.
        entropy: [B, T] float, per-token policy entropy (nats).
        mask: [B, T] 0/1 mask of the valid tokens.
        tau: probability threshold in (0, 1] of a mastered token.
        target_entropy: mean entropy (nats) below which the MPTs are dropped.

    Returns:
        Bool [B, T], the kept tokens.
    """
    mpt = mastered_positive_tokens(logp, advantages, mask, tau)
    low = masked_mean(jax.lax.stop_gradient(entropy), mask) < target_entropy
    return mask.astype(bool) & ~(mpt & low)


@register(
    "ulorl",
    paper="UloRL: An Ultra-Long Output Reinforcement Learning Approach for Advancing Large "
    "Language Models' Reasoning Abilities",
    kind="selector",
)
def ulorl(tau: float = 0.99, target_entropy: float = 0.2) -> Selector:
    """UloRL dynamic masking of well-mastered positive tokens (DMMPT) as a token selector.

    Formula:
        MPT[b, t] = m[b, t] & A[b, t] > 0 & pi(y_t) >= tau
        Hbar      = mean token entropy over the valid tokens of the batch
        select    = m & ~MPT   if Hbar < target_entropy,   select = m   otherwise

    Paper: "UloRL: An Ultra-Long Output Reinforcement Learning Approach for Advancing Large
    Language Models' Reasoning Abilities" (Du, Liu et al., 2025).

    Defaults: tau = 0.99 (the paper's MPT threshold); target entropy 0.2 nats is our choice (set
    it to the entropy level to hold). pi(y_t) = exp(batch.logp) of the current policy.

    Returns a :class:`Selector`; restrict the policy-gradient term with ``term.where(ulorl())``.
    Needs ``batch.entropy``.

    Args:
        tau: probability threshold in (0, 1] of a mastered token.
        target_entropy: mean entropy (nats) below which the MPTs are dropped.

    Returns:
        A :class:`Selector` named ``"ulorl"``.
    """
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1]; got {tau}")

    def select(batch):
        entropy = batch.require("entropy", "ulorl")
        return ulorl_keep_mask(
            batch.logp, batch.advantages, entropy, batch.mask, tau, target_entropy
        )

    return Selector("ulorl", select)
