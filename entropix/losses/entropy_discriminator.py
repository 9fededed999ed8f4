"""Entropy-discriminator clipping: drop the tokens whose update would shrink entropy the most.

Paper: "On the Entropy Dynamics in Reinforcement Fine-Tuning of Large Language Models" (Wang,
Xie et al., 2026). Raising the logit of token k by eps changes the entropy by
dH = -eps * S_k + O(eps^2) with the entropy discriminator

    S_k = p_k (H + log p_k),

and in a GRPO step a sampled token with advantage A moves entropy by about -A (S - baseline).
Clip_B uses the batch mean of S as the baseline, Clip_V the policy expectation
E_{a~pi}[S_a] = sum_a p_a^2 (H + log p_a) (needs the whole distribution). Tokens whose
predicted entropy decrease is an upper outlier of the batch are removed from the update.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import log_softmax, masked_mean
from entropix.losses.registry import register
from entropix.losses.selectors import Selector
from entropix.validation import check_choice, check_mask, check_positive, check_shape


def entropy_discriminator(logp: ArrayLike, entropy: ArrayLike) -> jax.Array:
    """S = p (H + log p) per token, p = exp(logp) of the sampled token; no gradient.

    Args:
        logp: [B, T] float, the sampled tokens' log-probs.
        entropy: [B, T] float, per-token policy entropy H (nats).

    Returns:
        float32 [B, T], the discriminator S (stop-gradient).
    """
    logp = jax.lax.stop_gradient(jnp.asarray(logp, jnp.float32))
    return jnp.exp(logp) * (jax.lax.stop_gradient(entropy) + logp)


def expected_discriminator(logits: ArrayLike) -> jax.Array:
    """E_{a~pi}[S_a] = sum_a p_a^2 (H + log p_a) over the vocabulary of ``logits`` [..., V].

    Args:
        logits: [..., V] float, the policy's (full or top-k) logits.

    Returns:
        float32 [...], the expectation at each position (stop-gradient).
    """
    lp = jax.lax.stop_gradient(log_softmax(logits))
    p = jnp.exp(lp)
    lp = jnp.where(p > 0, lp, 0.0)
    h = -jnp.sum(p * lp, axis=-1, keepdims=True)
    return jnp.sum(p * p * (h + lp), axis=-1)


def discriminator_keep_mask(
    contribution: ArrayLike, mask: ArrayLike, threshold: float = 2.0
) -> jax.Array:
    """Keep tokens whose entropy-decrease contribution is not an upper outlier of the batch.

    Formula:
        (over valid tokens)  z = (c - mean c) / std c,   keep = mask & (z <= threshold)
    ``contribution`` c = A (S - baseline) is the first-order entropy *decrease* of each token.

    Args:
        contribution: [B, T] float, c per token (:func:`discriminator_contribution`).
        mask: [B, T] 0/1 mask of the valid tokens.
        threshold: the z-score above which a token is dropped (standard deviations).

    Returns:
        Bool [B, T], True for the kept valid tokens.
    """
    check_mask(mask, "mask", jnp.shape(contribution))
    mean = masked_mean(contribution, mask)
    std = jnp.sqrt(masked_mean((contribution - mean) ** 2, mask))
    z = (contribution - mean) / jnp.maximum(std, 1e-12)
    return mask.astype(bool) & (z <= threshold)


def discriminator_contribution(
    logp: ArrayLike,
    entropy: ArrayLike,
    advantages: ArrayLike,
    mask: ArrayLike,
    logits: ArrayLike | None = None,
) -> jax.Array:
    """c = A (S - baseline): batch-mean baseline (Clip_B) or, given ``logits``, E_pi[S] (Clip_V).

    Args:
        logp: [B, T] float, the sampled tokens' log-probs.
        entropy: [B, T] float, per-token policy entropy (nats).
        advantages: [B, T] float, per-token advantages (no gradient).
        mask: [B, T] 0/1 mask of the valid tokens (for the batch-mean baseline).
        logits: [B, T, V] float logits for the Clip_V baseline; None for Clip_B.

    Returns:
        float32 [B, T], the contribution c (stop-gradient).
    """
    check_shape(entropy, "entropy", jnp.shape(logp))
    s = entropy_discriminator(logp, entropy)
    baseline = masked_mean(s, mask) if logits is None else expected_discriminator(logits)
    return jax.lax.stop_gradient(advantages) * (s - baseline)


@register(
    "entropy_discriminator_clip",
    paper="On the Entropy Dynamics in Reinforcement Fine-Tuning of Large Language Models",
    kind="selector",
)
def entropy_discriminator_clip(threshold: float = 2.0, baseline: str = "batch") -> Selector:
    """Clip_B / Clip_V: drop tokens whose first-order entropy decrease is an upper outlier.

    Formula:
        S_t = p_t (H_t + log p_t)                       (p_t = pi(y_t), H_t token entropy)
        c_t = A_t (S_t - baseline_t)                    (dH_t ~ -eta c_t)
        baseline_t = mean of S over the batch's valid tokens        (Clip_B, "batch")
                   = E_{a~pi}[S_a] = sum_a p_a^2 (H_t + log p_a)    (Clip_V, "vocab")
        z_t = (c_t - mean c) / std c  over valid tokens
        select = m & (z_t <= threshold)

    Paper: "On the Entropy Dynamics in Reinforcement Fine-Tuning of Large Language Models"
    (Wang, Xie et al., 2026).

    Defaults: threshold = 2.0 standard deviations, our choice: the paper states that both
    variants filter outlier tokens whose update would over-shrink entropy using batch
    statistics, without a value we could verify. Only the entropy-decreasing tail is removed.
    Clip_V needs ``batch.logits`` (full or top-k); both need ``batch.entropy``.

    Returns a :class:`Selector`: ``ppo_clip(...).where(entropy_discriminator_clip())``.

    Args:
        threshold: > 0, the z-score above which a token is dropped.
        baseline: ``"batch"`` (Clip_B) or ``"vocab"`` (Clip_V, needs ``logits``).

    Returns:
        A :class:`Selector` named ``"entropy_discriminator_<baseline>"``.
    """
    check_choice(baseline, "baseline", ("batch", "vocab"))
    check_positive(threshold, "threshold")

    def select(batch):
        method = f"entropy_discriminator_clip(baseline={baseline!r})"
        entropy = batch.require("entropy", method)
        logits = batch.require("logits", method) if baseline == "vocab" else None
        c = discriminator_contribution(batch.logp, entropy, batch.advantages, batch.mask, logits)
        return discriminator_keep_mask(c, batch.mask, threshold)

    needs = frozenset({"logits"}) if baseline == "vocab" else frozenset()
    return Selector(f"entropy_discriminator_{baseline}", select, needs)
