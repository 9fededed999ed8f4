"""AEPO temperature controller: pick the regulariser batch's sampling temperature from entropy."""

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from entropix.losses.aepo import aepo_temperature
from entropix.validation import check_positive


class AEPOState(NamedTuple):
    """The (optionally smoothed) entropy estimate of the sampling policy; NaN before any."""

    entropy: jax.Array


@dataclass(frozen=True)
class AEPOTemperature:
    """AEPO's temperature switch: sample the REINFORCE regulariser batch hot while entropy is
    below target, cold while it is above.

    Formula:
        H_est <- H                         (smoothing = 0; else H_est <- s H_est + (1 - s) H)
        T = T_high  if H_est < H_target,   T = T_low otherwise    (T = 1 before any observation)
    The rollout samples the regulariser batch from pi^T = softmax(z / T); the loss term is
    ``entropix.losses.aepo`` (REINFORCE with the verifiable reward on those samples).

    Paper: "Arbitrary Entropy Policy Optimization Breaks The Exploration Bottleneck of
    Reinforcement Learning" (Wang et al., 2025).

    Defaults: H_target 0.5, T_high 1.2, T_low 0.8 (the authors' configuration); smoothing 0
    (the paper reads the entropy of the current policy, i.e. the latest batch).
    """

    target: float = 0.5
    t_high: float = 1.2
    t_low: float = 0.8
    smoothing: float = 0.0
    metric: str = "entropy"
    control: str = "aepo_temperature"

    def __post_init__(self):
        check_positive(self.t_low, "t_low")
        if not self.t_low <= self.t_high:
            raise ValueError(f"need t_low <= t_high; got {self.t_low}, {self.t_high}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1); got {self.smoothing}")

    def init(self) -> AEPOState:
        """The state before any observation: entropy NaN (temperature 1).

        Returns:
            :class:`AEPOState` with a float32 NaN scalar.
        """
        return AEPOState(entropy=jnp.asarray(jnp.nan, jnp.float32))

    def update(self, state: AEPOState, entropy: jax.Array) -> AEPOState:
        """Smooth the entropy estimate with this step's observation (the first replaces NaN).

        Args:
            state: the current :class:`AEPOState`.
            entropy: float32 scalar, this step's policy entropy (nats).

        Returns:
            The next :class:`AEPOState`.
        """
        h = jnp.asarray(entropy, jnp.float32)
        s = self.smoothing
        smoothed = jnp.where(jnp.isnan(state.entropy), h, s * state.entropy + (1.0 - s) * h)
        return AEPOState(entropy=smoothed)

    def temperature(self, state: AEPOState) -> jax.Array:
        """The regulariser batch's sampling temperature, T_high or T_low (1 before any
        observation).

        Args:
            state: the current :class:`AEPOState`.

        Returns:
            float32 scalar temperature.
        """
        t = aepo_temperature(state.entropy, self.target, self.t_high, self.t_low)
        return jnp.where(jnp.isnan(state.entropy), 1.0, t).astype(jnp.float32)

    def controls(self, state: AEPOState) -> dict[str, jax.Array]:
        """The temperature as the loss and rollout read it.

        Args:
            state: the current :class:`AEPOState`.

        Returns:
            ``{control: temperature}``, a float32 scalar.
        """
        return {self.control: self.temperature(state)}
