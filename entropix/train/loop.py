"""``fit``: build or resume a TrainState on a mesh, run compiled steps, log, checkpoint.

    result = fit(run_dir, model_fn=..., optimizer=..., loss_fn=..., data=...,
                 config=TrainConfig(steps=100))

* ``model_fn(rngs: nnx.Rngs) -> nnx.Module`` builds the model (called inside ``jax.jit`` with
  the state's output shardings, so parameters are created directly on their devices).
* ``loss_fn(model, batch, key, controls) -> (loss, metrics)`` (see ``entropix.train.step``).
* ``data(position, state) -> batch``: the batch at ``position`` (0, 1, 2, ...), as this
  process's rows (numpy or jax arrays; see ``shard_batch``). It must be a pure function of
  ``position`` (and of ``state``, e.g. for rollouts from the current policy) so a resumed run
  sees the same batches.
* Resume: if ``<run_dir>/checkpoints`` holds a checkpoint, the newest intact one is restored
  onto the current mesh (corrupt ones are reported and skipped) and training continues from
  its step and data position; otherwise the state is initialised from ``config.seed``.
* Optional: ``init_params()`` gives the starting parameters (a pretrained or warm-started
  model; called only on a fresh start), ``frozen_fn(params)`` the state's frozen arrays (e.g.
  a reference policy), ``prepare_fn`` / ``weight_fn`` / ``probe_fn`` are the step's hooks
  (``entropix.train.step``; the probe runs every ``config.probe_every`` steps), and
  ``evaluate(state) -> {name: scalar}`` runs at step 0 of a fresh start, every
  ``config.eval_every`` steps and at the last step; its values join that step's record.
* Each record also holds ``time/data_s`` (the ``data`` call: for RL, the rollout),
  ``time/step_s`` (the compiled step) and, on evaluated steps, ``time/eval_s``.
"""

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from entropix.optim import Controller
from entropix.train.checkpoint import Checkpointer
from entropix.train.mesh import DEFAULT_RULES, Rules, make_mesh, shard_batch, state_shardings
from entropix.train.metrics import MetricsLogger
from entropix.train.state import TrainState
from entropix.train.step import NonFiniteError, check_guard, make_train_step


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (the config schema's ``train`` section maps onto this).

    steps: total train steps; micro_batches: gradient-accumulation micro-batches per update;
    mini_batches / epochs: optimiser updates per step (each batch is split into
    ``mini_batches`` mini-batches, visited ``epochs`` times); checkpoint_every / keep /
    async_checkpoint: orbax saving; max_nonfinite: stop after this many non-finite steps in a
    row; stage: the name the progress bar carries ("sft", "rl", ...); progress_every: plain
    progress line interval (non-TTY); tensorboard: write event
    files; seed: model init and step RNG; mesh: (data, fsdp, tensor) sizes, one of them may be
    -1 (all remaining devices); probe_every / eval_every: run the step's probe / ``evaluate``
    every N steps (0: never).
    """

    steps: int
    micro_batches: int = 1
    mini_batches: int = 1
    epochs: int = 1
    checkpoint_every: int = 100
    keep: int = 3
    async_checkpoint: bool = True
    max_nonfinite: int = 10
    stage: str = "train"
    progress_every: int = 10
    tensorboard: bool = True
    seed: int = 0
    mesh: tuple[int, int, int] = (-1, 1, 1)
    probe_every: int = 0
    eval_every: int = 0

    def __post_init__(self):
        names = ("steps", "micro_batches", "mini_batches", "epochs", "checkpoint_every", "keep")
        for name in (*names, "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1; got {getattr(self, name)}")
        for name in ("probe_every", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0; got {getattr(self, name)}")
        if len(self.mesh) != 3:
            raise ValueError(f"TrainConfig.mesh must be (data, fsdp, tensor); got {self.mesh}")


@dataclasses.dataclass
class FitResult:
    """The final state, the step it resumed from (None: fresh start), the last step's
    metrics and any checkpoint problems reported during restore."""

    state: TrainState
    resumed_from: int | None
    last_metrics: dict
    checkpoint_problems: list[str]


def init_state(
    model_fn: Callable[[nnx.Rngs], nnx.Module],
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    seed: int = 0,
    controllers: Mapping[str, Controller] | None = None,
    rules: Rules = DEFAULT_RULES,
    frozen_fn: Callable[[nnx.State], dict] | None = None,
    wrt: Any = nnx.Param,
) -> tuple[TrainState, Any, Callable[..., TrainState]]:
    """(abstract state, shardings, create) where ``create(params=None)`` builds the sharded
    state, with ``params`` (an ``nnx.State`` of the ``wrt`` variables, e.g. loaded weights) in
    place of the initialisation when given.

    The model is initialised from ``fold_in(PRNGKey(seed), 0)``, the step RNG is
    ``fold_in(PRNGKey(seed), 1)``; the result does not depend on the mesh. On several devices
    the state is built inside ``jax.jit`` with its output shardings (parameters never exist
    unsharded); on one device eagerly.

    Args:
        model_fn: ``model_fn(rngs) -> nnx.Module`` builds the model.
        optimizer: the optax transform of the trainable variables.
        mesh: the device mesh the state is placed on.
        seed: model init and step RNG seed; default 0.
        controllers: {name: controller}; default none.
        rules: partition rules (``entropix.train.mesh``); default ``DEFAULT_RULES``.
        frozen_fn: builds ``TrainState.frozen`` from the starting parameters; default none.
        wrt: nnx filter of the trainable variables; default ``nnx.Param``.

    Returns:
        ``(abstract, shardings, create)``: the TrainState of ShapeDtypeStructs, the matching
        pytree of NamedShardings, and ``create(params=None) -> TrainState`` (sharded).
    """

    def build(params):
        key = jax.random.PRNGKey(seed)
        model = model_fn(nnx.Rngs(jax.random.fold_in(key, 0)))
        if params is not None:
            nnx.update(model, params)
        frozen = None
        if frozen_fn is not None:
            frozen = frozen_fn(nnx.split(model, wrt, ...)[1])
        return TrainState.create(
            model,
            optimizer,
            rng=jax.random.fold_in(key, 1),
            controllers=controllers,
            frozen=frozen,
            wrt=wrt,
        )

    abstract = jax.eval_shape(lambda: build(None))
    shardings = state_shardings(abstract, mesh, rules)
    if mesh.size == 1:  # one device: nothing to shard, and eager ops need no compilation
        return abstract, shardings, lambda params=None: jax.device_put(build(params), shardings)
    compiled = jax.jit(build, out_shardings=shardings)

    def create(params=None):
        return compiled(params)

    return abstract, shardings, create


def fit(
    run_dir: str | Path,
    *,
    model_fn: Callable[[nnx.Rngs], nnx.Module],
    optimizer: optax.GradientTransformation,
    loss_fn: Callable,
    data: Callable,
    config: TrainConfig,
    controllers: Mapping[str, Controller] | None = None,
    logits_fn: Callable | None = None,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    stream: TextIO | None = None,
    init_params: Callable[[], nnx.State] | None = None,
    frozen_fn: Callable[[nnx.State], dict] | None = None,
    prepare_fn: Callable | None = None,
    weight_fn: Callable | None = None,
    probe_fn: Callable | None = None,
    evaluate: Callable[[TrainState], Mapping[str, float]] | None = None,
    wrt: Any = nnx.Param,
) -> FitResult:
    """Train to ``config.steps`` in ``run_dir``, resuming from its checkpoints if any.

    Raises ``NonFiniteError`` (after logging) when ``config.max_nonfinite`` steps in a row
    were non-finite; the message names the step and the offending loss terms. The module
    docstring describes each callable's contract.

    Args:
        run_dir: the run directory (checkpoints, ``metrics.jsonl``, TensorBoard events).
        model_fn: ``model_fn(rngs) -> nnx.Module``.
        optimizer: the optax transform.
        loss_fn: ``loss_fn(model, batch, key, controls) -> (loss, metrics)``.
        data: ``data(position, state) -> batch`` (this process's rows ``[batch, ...]``).
        config: steps, batching, checkpointing, logging and mesh settings.
        controllers: {name: controller}; default none.
        logits_fn: ``logits_fn(model, batch)`` for the safe step; default none.
        mesh: the device mesh; default ``make_mesh(*config.mesh)``.
        rules: partition rules; default ``DEFAULT_RULES``.
        stream: where progress goes; default stdout.
        init_params: ``init_params() -> nnx.State``, the starting parameters on a fresh
            start; default the model's initialisation.
        frozen_fn: ``frozen_fn(params) -> dict``, the state's frozen arrays; default none.
        prepare_fn: the step's prepare hook (``entropix.train.step``); default none.
        weight_fn: the step's micro-batch weight; default 1.
        probe_fn: the step's probe, run every ``config.probe_every`` steps; default none.
        evaluate: ``evaluate(state) -> {name: scalar}``, every ``config.eval_every`` steps
            and at the last; default none.
        wrt: nnx filter of the trainable variables; default ``nnx.Param``.

    Returns:
        :class:`FitResult`: final state, resumed-from step, last metrics, checkpoint problems.
    """
    run_dir = Path(run_dir)
    mesh = make_mesh(*config.mesh) if mesh is None else mesh
    abstract, shardings, create = init_state(
        model_fn,
        optimizer,
        mesh,
        seed=config.seed,
        controllers=controllers,
        rules=rules,
        frozen_fn=frozen_fn,
        wrt=wrt,
    )
    checkpointer = Checkpointer(
        run_dir / "checkpoints",
        every=config.checkpoint_every,
        keep=config.keep,
        async_save=config.async_checkpoint,
    )
    state = checkpointer.restore(abstract, shardings)
    resumed_from = None if state is None else int(jax.device_get(state.step))
    if state is None:
        state = create(None if init_params is None else init_params())
    step = int(jax.device_get(state.step))
    position = int(jax.device_get(state.data_position))
    logger = MetricsLogger(
        run_dir,
        total_steps=config.steps,
        resume_step=step,
        tensorboard=config.tensorboard,
        progress_every=config.progress_every,
        desc=config.stage,
        stream=stream,
    )
    if resumed_from is not None:
        logger.message(f"resumed from step {resumed_from} (data position {position})")
    train_step = make_train_step(
        loss_fn,
        micro_batches=config.micro_batches,
        mini_batches=config.mini_batches,
        epochs=config.epochs,
        weight_fn=weight_fn,
        prepare_fn=prepare_fn,
        probe_fn=probe_fn,
        logits_fn=logits_fn,
        mesh=mesh,
        state_sharding=shardings,
    )

    def every(interval: int, at: int) -> bool:
        return interval > 0 and at % interval == 0

    def evaluated(at: int) -> dict:
        if evaluate is None or not (every(config.eval_every, at) or at == config.steps):
            return {}
        start = time.perf_counter()
        values = {k: float(v) for k, v in evaluate(state).items()}
        return {**values, "time/eval_s": time.perf_counter() - start}

    metrics: dict = {}
    try:
        if resumed_from is None and evaluate is not None and config.eval_every:
            logger.log(0, evaluated(0))
        while step < config.steps:
            start = time.perf_counter()
            batch = shard_batch(data(position, state), mesh)
            data_s = time.perf_counter() - start
            probe = probe_fn is not None and every(config.probe_every, step + 1)
            state, device_metrics = train_step(state, batch, probe=probe)
            metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
            metrics.update(
                {"time/data_s": data_s, "time/step_s": time.perf_counter() - start - data_s}
            )
            step, position = step + 1, position + 1
            metrics.update(evaluated(step))
            logger.log(step, metrics)
            try:
                check_guard(metrics, step, config.max_nonfinite)
            except NonFiniteError as error:
                logger.message(str(error))
                raise
            checkpointer.save(state)
        checkpointer.save(state, force=True)
    finally:
        checkpointer.close()
        logger.close()
    return FitResult(state, resumed_from, metrics, list(checkpointer.problems))
