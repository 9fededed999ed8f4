"""Adaptive entropy coefficient: steer a policy's entropy to a target value or into a band."""

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from entropix.validation import check_positive


class EntropyCoefState(NamedTuple):
    """log alpha (float32 scalar) and the number of updates applied."""

    log_coef: jax.Array
    count: jax.Array


@dataclass(frozen=True)
class AdaptiveEntropyCoef:
    """Entropy-bonus coefficient alpha adapted in log space toward a target entropy or a band.

    Formula (one update per train step, H = the observed policy entropy):
        err = H_target - H                                   (target mode)
        err = max(H_low - H, 0) - max(H - H_high, 0)          (band mode; 0 inside the band)
        log alpha <- clip(log alpha + lr * err, log alpha_min, log alpha_max)
    The loss reads alpha = exp(log alpha) as ``controls[control]`` and adds ``-alpha * H``, so
    alpha grows while the entropy is too low and shrinks while it is too high.

    Paper: "Soft Actor-Critic Algorithms and Applications" (Haarnoja et al., 2018), whose
    automatic temperature adjustment moves log alpha by the gap between the target and the
    policy entropy (they use Adam, lr 3e-4, target -dim(A)). Here the step is plain and
    clipped, and the observation is a per-step metric instead of a sampled log-prob.

    Defaults: init_coef 1e-3 (a common fixed entropy bonus in LLM RL), lr 0.01 per nat of
    error, alpha in [1e-6, 1].
    """

    target: float | None = None
    band: tuple[float, float] | None = None
    lr: float = 0.01
    init_coef: float = 1e-3
    min_coef: float = 1e-6
    max_coef: float = 1.0
    metric: str = "entropy"
    control: str = "entropy_coef"

    def __post_init__(self):
        if (self.target is None) == (self.band is None):
            raise ValueError("AdaptiveEntropyCoef needs exactly one of target=... or band=(lo, hi)")
        if self.band is not None:
            if len(self.band) != 2 or not self.band[0] <= self.band[1]:
                raise ValueError(f"band must be (low, high) with low <= high; got {self.band}")
            object.__setattr__(self, "band", (float(self.band[0]), float(self.band[1])))
        for name in ("lr", "init_coef", "min_coef", "max_coef"):
            check_positive(getattr(self, name), name)
        if not self.min_coef <= self.init_coef <= self.max_coef:
            raise ValueError(
                f"need min_coef <= init_coef <= max_coef; got {self.min_coef}, "
                f"{self.init_coef}, {self.max_coef}"
            )

    def init(self) -> EntropyCoefState:
        """The state before any update: log alpha = log init_coef, count 0.

        Returns:
            :class:`EntropyCoefState` of float32 and int32 scalars.
        """
        return EntropyCoefState(
            log_coef=jnp.asarray(math.log(self.init_coef), jnp.float32),
            count=jnp.zeros((), jnp.int32),
        )

    def error(self, entropy: jax.Array) -> jax.Array:
        """The signed entropy gap that drives the update (positive: entropy too low).

        Args:
            entropy: float32 scalar (or array) observed policy entropy in nats.

        Returns:
            float32, the shape of ``entropy``: H_target - H, or the distance outside the band.
        """
        h = jnp.asarray(entropy, jnp.float32)
        if self.target is not None:
            return self.target - h
        low, high = self.band
        return jnp.maximum(low - h, 0.0) - jnp.maximum(h - high, 0.0)

    def update(self, state: EntropyCoefState, entropy: jax.Array) -> EntropyCoefState:
        """One clipped step of log alpha by ``lr * error(entropy)``.

        Args:
            state: the current :class:`EntropyCoefState`.
            entropy: float32 scalar, this step's policy entropy in nats.

        Returns:
            The next :class:`EntropyCoefState` (count + 1).
        """
        log_coef = jnp.clip(
            state.log_coef + self.lr * self.error(entropy),
            math.log(self.min_coef),
            math.log(self.max_coef),
        )
        return EntropyCoefState(log_coef=log_coef, count=state.count + 1)

    def controls(self, state: EntropyCoefState) -> dict[str, jax.Array]:
        """The coefficient as the loss reads it.

        Args:
            state: the current :class:`EntropyCoefState`.

        Returns:
            ``{control: alpha}``, alpha = exp(log alpha), a float32 scalar.
        """
        return {self.control: jnp.exp(state.log_coef)}
