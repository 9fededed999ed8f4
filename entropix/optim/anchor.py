"""Entropy anchor: the first observed value of a metric, held fixed for the rest of training."""

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp


class AnchorState(NamedTuple):
    """The recorded value (NaN until the first finite observation)."""

    value: jax.Array


@dataclass(frozen=True)
class EntropyAnchor:
    """Record the first finite observation of ``metric`` and hand it to the loss unchanged.

    Formula:
        anchor = NaN                      before any observation
        anchor = x_1                      the first finite observed value, kept for good

    Paper: "Rethinking Entropy Regularization in Large Reasoning Models" (SIREN): the
    self-anchored regulariser pulls the masked top-p entropy toward its value under the
    initial policy. The first step's ``siren/entropy`` is measured before any update, so it is
    exactly that value; SIREN's term treats a NaN anchor as "the current value" (loss 0).

    Defaults: metric ``siren/entropy``, control ``entropy_anchor`` (what SIREN reads).
    """

    metric: str = "siren/entropy"
    control: str = "entropy_anchor"

    def init(self) -> AnchorState:
        """The state before any observation: the anchor is NaN.

        Returns:
            :class:`AnchorState` with a float32 NaN scalar.
        """
        return AnchorState(value=jnp.asarray(jnp.nan, jnp.float32))

    def update(self, state: AnchorState, observation: jax.Array) -> AnchorState:
        """Record ``observation`` if nothing finite is recorded yet; otherwise keep the anchor.

        Args:
            state: the current :class:`AnchorState`.
            observation: float32 scalar, this step's value of ``metric``.

        Returns:
            The next :class:`AnchorState`.
        """
        x = jnp.asarray(observation, jnp.float32)
        return AnchorState(
            value=jnp.where(jnp.isnan(state.value) & jnp.isfinite(x), x, state.value)
        )

    def controls(self, state: AnchorState) -> dict[str, jax.Array]:
        """The anchor as the loss reads it.

        Args:
            state: the current :class:`AnchorState`.

        Returns:
            ``{control: anchor}``, a float32 scalar (NaN until recorded).
        """
        return {self.control: state.value}
