"""EPO entropy smoothing and phase weighting ("EPO: Entropy-regularized Policy Optimization
for LLM Agents Reinforcement Learning", Xu et al., 2025).

The historical mean entropy H_hist (a running/window mean over past steps) is state: the EPO
controller in ``entropix.optim`` keeps it and passes it each step as
``batch.controls["entropy_hist_mean"]``; the training step passes ``controls["step"]`` for
the phase weight. EPO's third part, the entropy bonus itself, is
:func:`~entropix.losses.entropy_bonus.entropy_bonus`.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import masked_mean
from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.registry import register
from entropix.validation import check_positive


def epo_phase_weight(
    step: int | ArrayLike,
    total_steps: int,
    mid_weight: float = 0.8,
    slow: float = 2.0,
    fast: float = 3.0,
) -> jax.Array:
    """EPO's phase weight: a slow decay 1 -> mid_weight over the first half of training,
    then a fast decay mid_weight -> mid_weight * exp(-fast) over the second half.

    w(s) = 1 - (1 - mid_weight) (1 - exp(-slow p)) / (1 - exp(-slow)),  p = s / (S/2),  s <= S/2
    w(s) = mid_weight exp(-fast p),                          p = (s - S/2) / (S/2),  s > S/2
    (continuous at S/2; ``step`` is clipped to [0, total_steps]; jit-able in ``step``).

    Args:
        step: the training step s (int or scalar array, may be traced).
        total_steps: the run's length S in steps, > 0.
        mid_weight: the weight at S/2, where the slow phase ends.
        slow: rate of the first half's decay.
        fast: rate of the second half's decay.

    Returns:
        The float32 weight w(s) (scalar for a scalar ``step``).
    """
    check_positive(total_steps, "total_steps")
    half = total_steps / 2.0
    s = jnp.clip(jnp.asarray(step, jnp.float32), 0.0, float(total_steps))
    p_early = s / half
    early = 1.0 - (1.0 - mid_weight) * (1.0 - jnp.exp(-slow * p_early)) / (1.0 - jnp.exp(-slow))
    late = mid_weight * jnp.exp(-fast * (s - half) / half)
    return jnp.where(s <= half, early, late)


@register(
    "epo_smoothing",
    paper="EPO: Entropy-regularized Policy Optimization for LLM Agents Reinforcement Learning",
    kind="intervention",
)
def epo_smoothing(
    coef: float = 0.1,
    kappa_low: float = 0.0,
    kappa_high: float = 2.0,
    total_steps: int | None = None,
) -> Term:
    """EPO entropy smoothing: penalise token entropy outside a band around its history.

    Formula:
        band = [kappa_low * H_hist, kappa_high * H_hist]
        d_t  = max(0, kappa_low H_hist - H_t) + max(0, H_t - kappa_high H_hist)
        loss_t = w(step) * d_t            (weighted by coef; w = 1 without phase weighting)

    Paper: EPO: Entropy-regularized Policy Optimization for LLM Agents Reinforcement Learning
    (Xu et al., 2025).

    Defaults: coef alpha = 0.1 (ALFWorld; 0.05 on ScienceWorld), kappa_low = 0,
    kappa_high = 2 (the authors' run scripts), token-level band. With ``total_steps`` set,
    the penalty is scaled by :func:`epo_phase_weight` at ``batch.controls["step"]``. Our
    choice: the penalty is the distance to the band (zero inside, gradient pushing H_t back
    in); the paper describes the band penalty qualitatively. Needs ``batch.entropy`` and
    ``batch.controls["entropy_hist_mean"]``; when ``batch.controls["entropy_hist_count"]`` is
    given (the ``entropy_history`` controller gives it) the penalty is 0 while the history is
    empty, since a band around an unknown mean (read as 0) would push every token's entropy
    to 0.

    Args:
        coef: > 0, the penalty weight alpha.
        kappa_low: lower band factor, 0 <= kappa_low <= kappa_high.
        kappa_high: upper band factor.
        total_steps: run length for :func:`epo_phase_weight`; None for no phase weighting.

    Returns:
        A per-token :class:`Term` named ``"epo_smoothing"`` with metric ``outside_fraction``.
    """
    check_positive(coef, "coef")
    if not 0.0 <= kappa_low <= kappa_high:
        raise ValueError(f"need 0 <= kappa_low <= kappa_high; got {kappa_low}, {kappa_high}")
    if total_steps is not None:
        check_positive(total_steps, "total_steps")

    def fn(batch: PolicyBatch, mask):
        entropy = jnp.asarray(batch.require("entropy", "epo_smoothing"), jnp.float32)
        hist = batch.control("entropy_hist_mean", "epo_smoothing")
        below = jnp.maximum(kappa_low * hist - entropy, 0.0)
        above = jnp.maximum(entropy - kappa_high * hist, 0.0)
        weight = 1.0
        if batch.controls is not None and "entropy_hist_count" in batch.controls:
            weight = (batch.control("entropy_hist_count", "epo_smoothing") > 0).astype(jnp.float32)
        if total_steps is not None:
            weight = weight * epo_phase_weight(batch.control("step", "epo_smoothing"), total_steps)
        outside = ((below > 0) | (above > 0)).astype(jnp.float32)
        return weight * (below + above), {"outside_fraction": masked_mean(outside, mask)}

    return Term("epo_smoothing", fn, coef=coef, controls=("entropy_hist_mean",))
