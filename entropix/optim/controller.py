"""The controller protocol: small stateful rules driven by a training metric, not by gradients.

A controller holds a pytree state that lives in ``TrainState.controls[name]`` (so it is
checkpointed with the run) and is advanced inside the compiled train step:

    state = controller.init()                       # pytree of arrays
    values = controller.controls(state)             # {control name: scalar array}
    state = controller.update(state, metrics[controller.metric])

Each step the train step reads ``controls(state)`` *before* the loss, passes the values to the
loss function (``controls`` dict; losses read them, e.g. ``PolicyBatch.controls``), then feeds
the metric the loss reported back into ``update``. Optax transforms cover what acts on
gradients (SAM/SAR, the safe step); controllers cover what acts on loss coefficients or
sampling temperatures. Both are jit-compatible and carry no Python-side state.
"""

from typing import Any, Protocol, runtime_checkable

import jax


@runtime_checkable
class Controller(Protocol):
    """A metric-driven controller: ``init() -> state``, ``update(state, x) -> state``,
    ``controls(state) -> dict``; ``metric`` names the loss metric it observes."""

    metric: str

    def init(self) -> Any:
        """The state before any observation.

        Returns:
            A pytree of arrays (kept in ``TrainState.controls[name]``).
        """
        ...

    def update(self, state: Any, observation: jax.Array) -> Any:
        """Advance the state by one observation of ``metric``.

        Args:
            state: the pytree from :meth:`init` or the previous :meth:`update`.
            observation: float32 scalar, this step's value of the loss metric ``metric``.

        Returns:
            The next state, the same pytree structure.
        """
        ...

    def controls(self, state: Any) -> dict[str, jax.Array]:
        """The control values the loss reads this step.

        Args:
            state: the controller's current state.

        Returns:
            dict of float32 scalars keyed by control name (``PolicyBatch.controls``).
        """
        ...
