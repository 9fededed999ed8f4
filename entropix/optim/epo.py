"""EPO entropy history: the historical mean entropy that EPO's smoothing term is anchored to."""

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from entropix.validation import check_positive


class EntropyHistoryState(NamedTuple):
    """Running sum and count of observed entropies, plus a ring buffer in window mode."""

    total: jax.Array
    count: jax.Array
    window: jax.Array | None


@dataclass(frozen=True)
class EntropyHistory:
    """Historical mean of the policy entropy, read by EPO's entropy smoothing regulariser.

    Formula (H_k = the entropy observed at step k, before step k's update; K observations):
        cumulative:  H_hist = (1/K) sum_{k<K} H_k                (the authors' default)
        window W:    H_hist = (1/min(K, W)) sum_{K-W <= k < K} H_k
    The smoothing term (``entropix.losses.epo_smoothing``) penalises token entropy outside
    [kappa_low * H_hist, kappa_high * H_hist]; its phase weight is computed from
    ``controls["step"]`` by ``entropix.losses.epo_phase_weight``.

    Paper: "EPO: Entropy-regularized Policy Optimization for LLM Agents Reinforcement
    Learning" (Xu et al., 2025).

    Defaults: cumulative mean over all past steps (the released code; a sliding window is its
    optional variant). ``initial`` seeds the history with one observation, e.g. the entropy of
    the starting policy; without it the history is empty at step 0 and
    ``controls["entropy_hist_count"]`` is 0 (``entropy_hist_mean`` reads 0 then), so a loss
    can switch the smoothing term off until a history exists.
    """

    window: int | None = None
    initial: float | None = None
    metric: str = "entropy"

    def __post_init__(self):
        if self.window is not None:
            check_positive(self.window, "window")

    def init(self) -> EntropyHistoryState:
        """The empty history, or the history of the one ``initial`` observation.

        Returns:
            :class:`EntropyHistoryState` (float32 total, int32 count, float32 [window] ring
            buffer or None).
        """
        state = EntropyHistoryState(
            total=jnp.zeros((), jnp.float32),
            count=jnp.zeros((), jnp.int32),
            window=None if self.window is None else jnp.zeros((self.window,), jnp.float32),
        )
        return state if self.initial is None else self.update(state, self.initial)

    def update(self, state: EntropyHistoryState, entropy: jax.Array | float) -> EntropyHistoryState:
        """Add one observation to the history.

        Args:
            state: the current :class:`EntropyHistoryState`.
            entropy: float32 scalar, this step's policy entropy in nats.

        Returns:
            The next :class:`EntropyHistoryState`.
        """
        h = jnp.asarray(entropy, jnp.float32)
        window = state.window
        if self.window is not None:
            window = window.at[state.count % self.window].set(h)
        return EntropyHistoryState(total=state.total + h, count=state.count + 1, window=window)

    def mean(self, state: EntropyHistoryState) -> jax.Array:
        """H_hist (0 while the history is empty).

        Args:
            state: the current :class:`EntropyHistoryState`.

        Returns:
            float32 scalar historical mean entropy in nats.
        """
        if self.window is None:
            total, n = state.total, state.count
        else:
            n = jnp.minimum(state.count, self.window)
            total = jnp.sum(state.window)  # unfilled slots are 0
        n = n.astype(jnp.float32)
        return jnp.where(n > 0, total / jnp.maximum(n, 1.0), 0.0)

    def controls(self, state: EntropyHistoryState) -> dict[str, jax.Array]:
        """The history as EPO's smoothing term reads it.

        Args:
            state: the current :class:`EntropyHistoryState`.

        Returns:
            ``{"entropy_hist_mean": H_hist, "entropy_hist_count": K}``, float32 scalars.
        """
        return {
            "entropy_hist_mean": self.mean(state),
            "entropy_hist_count": state.count.astype(jnp.float32),
        }
