"""Clip-Cov and KL-Cov: restrain the few tokens whose log-prob/advantage covariance drives
entropy collapse ("The Entropy Mechanism of Reinforcement Learning for Reasoning Language
Models", Cui et al., 2025).

Token covariance over the N valid tokens of the batch (logp is the current policy's log-prob
of the sampled token, taken without gradient):

    Cov_t = (logp_t - mean_valid(logp)) * (A_t - mean_valid(A))
"""

import jax
import jax.numpy as jnp

from entropix.entropy import masked_mean
from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.objectives import ppo_clip
from entropix.losses.registry import register
from entropix.losses.selectors import Selector, fraction_count, top_k_mask, valid_count
from entropix.validation import check_positive


def centred_covariance(batch: PolicyBatch) -> jax.Array:
    """Per-token centred covariance Cov_t of logp and advantage over valid tokens (no grad).

    Args:
        batch: the policy batch (reads ``logp``, ``advantages`` and ``mask``).

    Returns:
        float32 [B, T], Cov_t at every position (means over the valid tokens; padding
        positions hold values too, which callers mask out).
    """
    logp = jax.lax.stop_gradient(jnp.asarray(batch.logp, jnp.float32))
    adv = jnp.asarray(batch.advantages, jnp.float32)
    return (logp - masked_mean(logp, batch.mask)) * (adv - masked_mean(adv, batch.mask))


def _check_ratio(ratio):
    check_positive(ratio, "ratio")
    if ratio > 1:
        raise ValueError(f"ratio is a fraction of tokens and must be <= 1; got {ratio}")


def clip_cov_selector(
    ratio: float = 2e-4, omega_low: float = 1.0, omega_high: float = 5.0
) -> Selector:
    """The Clip-Cov token set: k random valid tokens with omega_low <= Cov_t <= omega_high.

    k = max(1, floor(ratio * N)) (fewer when the band holds fewer tokens). The random subset is
    the k in-band tokens with the smallest draws u = jax.random.uniform(batch.key, [B, T]).

    Args:
        ratio: fraction of the valid tokens to pick, 0 < ratio <= 1.
        omega_low: lower edge of the covariance band (inclusive).
        omega_high: upper edge of the covariance band (inclusive), >= omega_low.

    Returns:
        A :class:`Selector` named ``"clip_cov"`` (reads ``batch.key``).
    """
    _check_ratio(ratio)
    if not omega_low <= omega_high:
        raise ValueError(f"need omega_low <= omega_high; got {omega_low} > {omega_high}")

    def fn(batch: PolicyBatch):
        key = batch.require("key", "clip_cov")
        cov = centred_covariance(batch)
        band = (batch.mask > 0) & (cov >= omega_low) & (cov <= omega_high)
        u = jax.random.uniform(key, cov.shape)
        return top_k_mask(-u, band, fraction_count(ratio, valid_count(batch.mask)))

    return Selector("clip_cov", fn)


@register(
    "clip_cov",
    paper="The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
    kind="intervention",
)
def clip_cov(
    objective: Term | None = None,
    ratio: float = 2e-4,
    omega_low: float = 1.0,
    omega_high: float = 5.0,
) -> Term:
    """Clip-Cov: stop the gradient of a few random tokens whose covariance is high.

    Formula:
        Cov_t = (logp_t - mean(logp)) * (A_t - mean(A))      over the N valid tokens
        I_clip = k random tokens from {t : omega_low <= Cov_t <= omega_high},
                 k = max(1, floor(ratio N))
        loss_t = sg(l_t) for t in I_clip, l_t otherwise      (l_t: the objective's loss)

    Paper: The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models
    (Cui et al., 2025).

    Defaults: ratio r = 2e-4, omega_low = 1, omega_high = 5 (the paper's Clip-Cov setting);
    ``objective`` defaults to :func:`~entropix.losses.objectives.ppo_clip` with its defaults.
    Our choices: the band is closed; every valid token is eligible (the authors' code also
    skips tokens the PPO clip already cut, which have zero gradient anyway); at least one
    token is picked. Needs ``batch.key`` (fresh each step).

    Args:
        objective: the per-token policy-gradient term to modify; None for ``ppo_clip()``.
        ratio: fraction of the valid tokens whose gradient is stopped, 0 < ratio <= 1.
        omega_low: lower edge of the covariance band (inclusive).
        omega_high: upper edge of the covariance band (inclusive), >= omega_low.

    Returns:
        ``objective`` with the Clip-Cov tokens detached (:meth:`Term.detach_where`).
    """
    objective = ppo_clip() if objective is None else objective
    return objective.detach_where(clip_cov_selector(ratio, omega_low, omega_high))


def kl_cov_selector(ratio: float = 2e-3) -> Selector:
    """The KL-Cov token set: the k = max(1, floor(ratio * N)) valid tokens with largest Cov_t.

    Args:
        ratio: fraction of the valid tokens to pick, 0 < ratio <= 1.

    Returns:
        A :class:`Selector` named ``"kl_cov"``.
    """
    _check_ratio(ratio)

    def fn(batch: PolicyBatch):
        k = fraction_count(ratio, valid_count(batch.mask))
        return top_k_mask(centred_covariance(batch), batch.mask, k)

    return Selector("kl_cov", fn)


@register(
    "kl_cov",
    paper="The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
    kind="intervention",
)
def kl_cov(ratio: float = 2e-3, coef: float = 1.0) -> Term:
    """KL-Cov: a KL penalty to the behaviour policy on the top-covariance tokens only.

    Formula:
        Cov_t = (logp_t - mean(logp)) * (A_t - mean(A))      over the N valid tokens
        I_KL = top-k tokens by Cov_t,  k = max(1, floor(ratio N))
        loss_t = |logp_t - old_logp_t| for t in I_KL, 0 otherwise   (weighted by coef)

    Paper: The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models
    (Cui et al., 2025).

    Defaults: ratio k = 2e-3 (the paper's Qwen2.5-7B setting; 2e-4 for 32B), coef beta = 1.
    Add it next to the policy-gradient term; it is averaged over all valid tokens (zero off
    I_KL), so ``compose(ppo_clip(), kl_cov())`` equals the paper's per-token objective. The
    paper writes KL(pi_old || pi_theta); like the authors' code we use the absolute log-ratio
    of the sampled token as its estimate. Ties in Cov_t go to the earlier position.

    Args:
        ratio: fraction of the valid tokens penalised, 0 < ratio <= 1.
        coef: > 0, the KL weight beta.

    Returns:
        A per-token :class:`Term` named ``"kl_cov"`` with metric ``selected_fraction``.
    """
    check_positive(coef, "coef")
    selector = kl_cov_selector(ratio)

    def fn(batch: PolicyBatch, mask):
        selected = selector(batch)
        log_ratio = jnp.asarray(batch.logp, jnp.float32) - jnp.asarray(batch.old_logp, jnp.float32)
        values = jnp.where(selected, jnp.abs(log_ratio), 0.0)
        return values, {"selected_fraction": masked_mean(selected.astype(jnp.float32), mask)}

    return Term("kl_cov", fn, coef=coef)
