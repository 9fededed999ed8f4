"""``TrainState``: everything one training run carries from step to step, as one pytree.

Array fields (checkpointed, sharded by ``entropix.train.mesh``):

* ``params``       nnx.State of the model's trainable variables (``wrt``, default every
  ``nnx.Param``): what the optimizer updates.
* ``model_state``  nnx.State of every other model variable (BatchNorm statistics, sigmaReparam
  power-iteration vectors, parameters outside ``wrt``, ...), threaded through the loss and
  updated by the step.
* ``frozen``       dict of arrays the step reads but never updates (e.g. ``{"reference":
  params at the start}``, the frozen reference policy of a KL penalty); ``{}`` by default.
* ``opt_state``    the optax state of ``tx``.
* ``controls``     {name: controller state} for the metric-driven controllers.
* ``rng``          uint32[2] PRNG key; each step splits it (``rng, step_key = split(rng)``).
* ``step``         int32, completed train steps (skipped non-finite steps included).
* ``data_position`` int32, batches consumed (advances with ``step``; resume reads from here).
* ``nonfinite_total`` / ``nonfinite_streak``  int32 counters of skipped steps (all / in a row).

Static fields (part of the tree structure, not checkpointed): ``graphdef`` (the nnx module
structure), ``tx`` (the optax transform), ``controllers`` ((name, controller) pairs) and
``wrt`` (the nnx filter of the trainable variables).
"""

from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from entropix.optim import Controller


def _unaliased(tree):
    """Copy leaves that are the same array object as an earlier leaf: the train step donates
    the state, and XLA refuses to donate one buffer twice (eager inits often share zeros)."""
    seen: set[int] = set()

    def one(x):
        if id(x) in seen:
            return jnp.array(x, copy=True)
        seen.add(id(x))
        return x

    return jax.tree.map(one, tree)


@flax.struct.dataclass
class TrainState:
    """One run's model, optimizer, controller, RNG and data-position state (see module doc)."""

    graphdef: nnx.GraphDef = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    controllers: tuple = flax.struct.field(pytree_node=False)
    wrt: object = flax.struct.field(pytree_node=False)
    params: nnx.State
    model_state: nnx.State
    opt_state: optax.OptState
    frozen: dict
    controls: dict
    rng: jax.Array
    step: jax.Array
    data_position: jax.Array
    nonfinite_total: jax.Array
    nonfinite_streak: jax.Array

    @classmethod
    def create(
        cls,
        model: nnx.Module,
        tx: optax.GradientTransformation,
        *,
        rng: jax.Array,
        controllers: Mapping[str, Controller] | None = None,
        frozen: dict | None = None,
        wrt: Any = nnx.Param,
    ) -> "TrainState":
        """Split ``model`` into graphdef / trainable ``wrt`` variables / other state and
        initialise everything; ``frozen`` is kept as given (see the module docstring).

        Args:
            model: the nnx module to train.
            tx: the optax transform of the trainable variables.
            rng: raw uint32[2] key from ``jax.random.PRNGKey`` (typed keys are refused).
            controllers: {name: controller} (:class:`entropix.optim.Controller`); default none.
            frozen: dict of arrays the step reads and never updates; default ``{}``.
            wrt: nnx filter of the trainable variables; default ``nnx.Param``.

        Returns:
            The initial :class:`TrainState` (step 0, no leaf aliasing another).
        """
        graphdef, params, model_state = nnx.split(model, wrt, ...)
        controllers = tuple((controllers or {}).items())
        for name, controller in controllers:
            if not isinstance(controller, Controller):
                raise TypeError(
                    f"controllers[{name!r}] must have init/update/controls and a metric "
                    f"(entropix.optim.Controller); got {type(controller).__name__}"
                )
        rng = jnp.asarray(rng)
        if rng.shape != (2,) or rng.dtype != jnp.uint32:
            raise TypeError(
                "rng must be a raw uint32[2] key from jax.random.PRNGKey; "
                f"got {rng.dtype}{rng.shape}"
            )
        zero = lambda: jnp.zeros((), jnp.int32)
        state = cls(
            graphdef=graphdef,
            tx=tx,
            controllers=controllers,
            wrt=wrt,
            params=params,
            model_state=model_state,
            opt_state=tx.init(params),
            frozen=dict(frozen or {}),
            controls={name: c.init() for name, c in controllers},
            rng=rng,
            step=zero(),
            data_position=zero(),
            nonfinite_total=zero(),
            nonfinite_streak=zero(),
        )
        return _unaliased(state)

    def model(self) -> nnx.Module:
        """The nnx module with this state's parameters and variables.

        Returns:
            A new module (a copy: changing it leaves the state as it is).
        """
        return nnx.merge(self.graphdef, self.params, self.model_state, copy=True)

    def control_values(self) -> dict[str, jax.Array]:
        """The values every controller hands to the loss this step, merged into one dict.

        Returns:
            {control name: float32 scalar}; raises ValueError if two controllers set one
            control, or one sets ``"step"``.
        """
        values: dict[str, jax.Array] = {}
        for name, controller in self.controllers:
            for key, value in controller.controls(self.controls[name]).items():
                if key in values or key == "step":
                    raise ValueError(f"controller {name!r} sets control {key!r} a second time")
                values[key] = value
        return values
