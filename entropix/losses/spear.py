"""SPEAR: self-imitation from a replay buffer of past wins, phased in by a curriculum.

Paper: "Learn the Ropes, Then Trust the Wins: Self-imitation with Progressive Exploration for
Agentic Reinforcement Learning" (Qin, Tan et al., 2025). Successful trajectories are kept in a
replay buffer; each step some are replayed off-policy with a recalibrated advantage (the reward
minus the median of recent rewards, so stale wins stop counting once the policy has caught up)
and trained with a clipped surrogate whose weight rises over training: first learn the ropes
(on-policy exploration), then trust the wins (self-imitation). Clip-Cov on the replayed tokens
curbs over-confidence.

The buffer itself lives on the host and is saved beside the checkpoints
(``entropix.rl.replay``); this module holds the loss on the replayed batch and its settings.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.covariance import clip_cov_selector
from entropix.losses.objectives import ppo_clip
from entropix.losses.registry import register
from entropix.validation import check_positive


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
    """The replay buffer of a SPEAR term (see :func:`spear`)."""

    capacity: int = 2048
    tolerate_steps: int = 5
    baseline_size: int = 10240
    min_reward: float = 1.0

    def __post_init__(self):
        for name in ("capacity", "tolerate_steps", "baseline_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"spear: {name} must be an integer >= 1; got {value!r}")


@dataclasses.dataclass(frozen=True)
class ReplayTerm(Term):
    """A term the RL trainer evaluates on the replayed batch (``batch["replay"]``), not on the
    rollout batch; ``replay`` configures the buffer that feeds it."""

    replay: ReplaySettings = ReplaySettings()


def sil_weight(step: int | ArrayLike, ramp_steps: int) -> jax.Array:
    """Self-imitation weight at ``step``: a cosine ramp from 0 to 1 over ``ramp_steps``.

    Formula:
        gamma_t = (1 - cos(pi min(t / ramp_steps, 1))) / 2

    Args:
        step: the training step t (int or scalar array, may be traced; >= 0).
        ramp_steps: ramp length in steps, >= 1.

    Returns:
        The float32 weight gamma_t in [0, 1].
    """
    progress = jnp.minimum(jnp.asarray(step, jnp.float32) / ramp_steps, 1.0)
    return 0.5 * (1.0 - jnp.cos(math.pi * progress))


@register(
    "spear",
    paper="Learn the Ropes, Then Trust the Wins: Self-imitation with Progressive Exploration for "
    "Agentic Reinforcement Learning",
    kind="objective",
)
def spear(
    coef: float = 1.0,
    ramp_steps: int = 100,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip: float | None = 10.0,
    clip_cov_ratio: float | None = 0.02,
    clip_cov_low: float = 2.0,
    clip_cov_high: float = 60.0,
    capacity: int = 2048,
    tolerate_steps: int = 5,
    baseline_size: int = 10240,
    min_reward: float = 1.0,
) -> ReplayTerm:
    """SPEAR self-imitation loss on replayed successful trajectories, with a curriculum weight.

    Formula:
        buffer: responses with R >= min_reward, dropped after tolerate_steps steps (FIFO,
                capacity trajectories); baseline: the last baseline_size rollout rewards
        A_j  = R_j - P50(baseline)      (advantage recalibration; only A_j > 0 is replayed)
        r_t  = exp(logp_t - logp_behaviour_t)       (the log-probs stored when it was sampled)
        l_t  = gamma_t * max(-A r_t, -A clip(r_t, 1 - eps_low, 1 + eps_high)), dual clip c
        gamma_t = (1 - cos(pi min(step / ramp_steps, 1))) / 2
        Clip-Cov: gradient stopped on clip_cov_ratio of the replayed tokens with
                  clip_cov_low <= Cov_t <= clip_cov_high
        total loss = on-policy loss + coef * token-mean_replayed(l_t)

    Paper: "Learn the Ropes, Then Trust the Wins: Self-imitation with Progressive Exploration
    for Agentic Reinforcement Learning" (Qin, Tan et al., 2025).

    Defaults: the authors' ALFWorld script: buffer of 2048 trajectories, tolerate 5 steps,
    baseline window 10240 rewards with the P50 baseline, replay loss coefficient 1 reached over
    100 steps, clip 0.2 / 0.28, dual clip 10, Clip-Cov ratio 0.02 in [2, 60]. Our choices: a
    trajectory enters the buffer when its reward is at least ``min_reward`` (1: a verified
    win); the weight ramps by a cosine (the script names only its length); the replayed
    batch has as many rows as the rollout batch, drawn uniformly from the buffer's entries
    with A > 0 (padding rows when fewer); it is its own token-mean, added to the on-policy
    loss. The curriculum's other half, an intrinsic tool-call reward that decays over
    training, does not apply to tasks without tools and is not included. The buffer lives on
    the host and is saved per step beside the checkpoints (``entropix.rl.replay``), so a
    resumed run replays exactly what it would have. Metrics: ``weight`` (gamma_t) and
    ppo_clip's.

    Args:
        coef: > 0, the replay loss coefficient reached at the end of the ramp.
        ramp_steps: curriculum ramp length in steps, an int >= 1.
        eps_low: lower clip width of the replay surrogate.
        eps_high: upper clip width of the replay surrogate.
        dual_clip: dual-clip constant c > 1, or None for no dual clip.
        clip_cov_ratio: fraction of replayed tokens Clip-Cov detaches; None turns Clip-Cov off.
        clip_cov_low: lower edge of the Clip-Cov covariance band.
        clip_cov_high: upper edge of the Clip-Cov covariance band.
        capacity: the buffer's size in trajectories, an int >= 1.
        tolerate_steps: steps a trajectory stays in the buffer, an int >= 1.
        baseline_size: number of recent rollout rewards in the P50 baseline, an int >= 1.
        min_reward: the reward a trajectory needs to enter the buffer.

    Returns:
        A per-token :class:`ReplayTerm` named ``"spear"`` (reads the ``step`` control)
        carrying its :class:`ReplaySettings`.
    """
    if not isinstance(ramp_steps, int) or ramp_steps < 1:
        raise ValueError(f"spear: ramp_steps must be an integer >= 1; got {ramp_steps!r}")
    check_positive(coef, "coef")
    settings = ReplaySettings(capacity, tolerate_steps, baseline_size, float(min_reward))
    base = ppo_clip(eps_low, eps_high, dual_clip)

    def fn(batch: PolicyBatch, mask):
        weight = sil_weight(batch.control("step", "spear"), ramp_steps)
        loss, metrics = base.fn(batch, mask)
        return weight * loss, {**metrics, "weight": weight}

    term = ReplayTerm("spear", fn, coef=coef, controls=("step",), replay=settings)
    if clip_cov_ratio is None:
        return term
    return term.detach_where(clip_cov_selector(clip_cov_ratio, clip_cov_low, clip_cov_high))
