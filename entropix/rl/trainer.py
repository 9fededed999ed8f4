"""The RL trainer: rollout -> rewards -> advantages -> update, on ``entropix.train.fit``.

    summary = entropix.rl.train(config, run_dir)          # config: an RLConfig
    plan = entropix.rl.build(config); result = entropix.rl.run(plan, run_dir)   # the parts

:func:`build` turns the config into a :class:`Plan` and checks it before anything is compiled
or trained (one-line ``ValueError`` for each problem): the loss terms, their declared needs
(full logits, a reference policy) and the controls they read (each must come from a
configured controller), the advantage shapers' inputs, ``group_size >= 2`` for group-relative
shapers, the batch against the mesh and the mini/micro-batches, and -- by tracing the update
once with abstract values -- that every controller's metric is one the step reports.

:func:`train` then runs the optional supervised warm-up (``entropix.rl.sft``, only on a fresh
start) and the RL steps through ``entropix.train.fit``: the state (params, AdamW state,
controllers, the frozen reference when needed) lives on the mesh, is checkpointed with exact
resume, and every step is one compiled program (prepare -> ``epochs x mini_batches`` updates
-> controllers -> the dynamics probe on the steps that log it). Rollouts are the fit's
``data`` stage, the greedy evaluation its ``evaluate``.
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from entropix.config import save as save_config
from entropix.losses import Composed, compose
from entropix.losses import get as get_method
from entropix.optim import supplier_of
from entropix.rl.advantages import AdvantageStage
from entropix.rl.config import RLConfig
from entropix.rl.policy import Policy, build_policy, make_source
from entropix.rl.rollout import Rollouts, batch_rows
from entropix.rl.sft import warm_start
from entropix.rl.update import PolicyForward, Update
from entropix.runs import summarize
from entropix.train import FitResult, TrainConfig, fit, make_mesh, read_metrics

TERM_KINDS = ("objective", "intervention")


@dataclasses.dataclass
class Plan:
    """Everything an RL run is built from, checked (see :func:`build`)."""

    config: RLConfig
    task: object
    policy: Policy
    main: Composed
    streams: dict[str, Composed]
    controllers: dict
    mesh: jax.sharding.Mesh
    rollouts: Rollouts
    update: Update
    optimizer: optax.GradientTransformation

    @property
    def reference(self) -> bool:
        return self.update.reference


def _terms(config: RLConfig):
    """(main composed loss, {control: composed loss of the terms sampled at it})."""
    terms = []
    for i, spec in enumerate(config.loss.terms):
        kind = get_method(spec.name).kind
        if kind not in TERM_KINDS:
            where = "loss.selector" if kind == "selector" else "loss.advantage / loss.rewards"
            raise ValueError(
                f"loss.terms.{i}: {spec.name!r} is a {kind} method, not a loss term"
                + (f" (give it as {where})" if kind in ("selector", "advantage", "reward") else "")
            )
        terms.append(spec.build())
    if not terms:
        raise ValueError("loss.terms: name at least one term (e.g. ppo_clip)")
    if config.loss.selector is not None:
        spec = config.loss.selector
        if get_method(spec.name).kind != "selector":
            raise ValueError(f"loss.selector: {spec.name!r} is not a selector method")
        terms[0] = terms[0].where(spec.build())
    aggregate = config.loss.aggregate
    main = [t for t in terms if t.sampled_at is None]
    if not main:
        raise ValueError("loss.terms: every term is sampled at another temperature; add ppo_clip")
    streams: dict[str, list] = {}
    for term in terms:
        if term.sampled_at is not None:
            streams.setdefault(term.sampled_at, []).append(term)
    composed = {c: compose(*ts, aggregate=aggregate) for c, ts in streams.items()}
    return compose(*main, aggregate=aggregate), composed


def _check_controls(terms, controllers: dict) -> None:
    supplied = {"step"}
    for controller in controllers.values():
        supplied |= set(controller.controls(controller.init()))
    for term in terms:
        for control in term.controls:
            if control not in supplied:
                name = supplier_of(control)
                hint = f"; add `controllers: [{{name: {name}}}]`" if name else ""
                raise ValueError(
                    f"loss term {term.name!r} reads controls[{control!r}], which no configured "
                    f"controller supplies{hint}"
                )


def _check_batch(config: RLConfig, mesh, group_relative: bool) -> None:
    rollout, update = config.rollout, config.update
    if rollout.prompts < 1 or rollout.group_size < 1:
        raise ValueError(
            f"rollout.prompts and rollout.group_size must be >= 1; got {rollout.prompts}, "
            f"{rollout.group_size}"
        )
    if group_relative and rollout.group_size < 2:
        raise ValueError(
            f"rollout.group_size={rollout.group_size}: the group-relative shapers of "
            "loss.advantage / loss.rewards need at least 2 responses per prompt"
        )
    rows = rollout.prompts * rollout.group_size
    parts = update.mini_batches * update.micro_batches
    devices = batch_rows(mesh)
    if rows % parts or (rows // parts) % devices:
        raise ValueError(
            f"a rollout batch of {rows} responses (rollout.prompts x group_size) must split into "
            f"update.mini_batches x micro_batches = {parts} parts of a multiple of the mesh's "
            f"data x fsdp = {devices} rows"
        )


def _check_dynamics(config: RLConfig) -> None:
    d = config.dynamics
    rows = config.rollout.prompts * config.rollout.group_size
    checks = [
        (d.every >= 0, f"dynamics.every must be >= 0 (0: never); got {d.every}"),
        (
            0.0 < d.prob_threshold < 1.0,
            f"dynamics.prob_threshold must lie in (0, 1); got {d.prob_threshold}",
        ),
        (
            0.0 < d.forking_quantile < 1.0,
            f"dynamics.forking_quantile must lie in (0, 1); got {d.forking_quantile}",
        ),
        (d.forking_entropy >= 0, f"dynamics.forking_entropy must be >= 0; got {d.forking_entropy}"),
        (d.position_bins >= 1, f"dynamics.position_bins must be >= 1; got {d.position_bins}"),
        (
            d.row_stride >= 1 and rows % (d.row_stride * config.update.micro_batches) == 0,
            f"dynamics.row_stride={d.row_stride}: the {rows} rows of a batch must split into "
            f"row_stride x update.micro_batches = "
            f"{d.row_stride * config.update.micro_batches} equal parts",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _abstract_batch(config: RLConfig, policy: Policy, streams) -> dict:
    rows = config.rollout.prompts * config.rollout.group_size
    p, n = policy.layout.prompt_len, policy.layout.new_tokens
    s = jax.ShapeDtypeStruct
    tokens = {
        "prompt": s((rows, p), jnp.int32),
        "prompt_mask": s((rows, p), bool),
        "response": s((rows, n), jnp.int32),
        "response_mask": s((rows, n), bool),
    }
    batch = {
        **tokens,
        "rollout_logp": s((rows, n), jnp.float32),
        "rollout_entropy": s((rows, n), jnp.float32),
        "answer_mask": s((rows, n), bool),
        "group_ids": s((rows,), jnp.int32),
        **{k: s((rows,), jnp.float32) for k in ("rewards", "correct", "parsed", "ended")},
    }
    if streams:
        stream = {**tokens, "rewards": s((rows,), jnp.float32)}
        batch["streams"] = {control: stream for control in streams}
    return batch


def _check_metrics(plan: Plan) -> None:
    """Trace prepare + loss once on abstract values: every controller's metric must exist."""
    if not plan.controllers:
        return
    graphdef, params, rest = nnx.split(
        nnx.eval_shape(lambda: plan.policy.model_fn(nnx.Rngs(0))), nnx.Param, ...
    )
    controls = {"step": jax.ShapeDtypeStruct((), jnp.int32)}
    for controller in plan.controllers.values():
        for name in controller.controls(controller.init()):
            controls[name] = jax.ShapeDtypeStruct((), jnp.float32)

    def metric_names(params, rest, batch, controls):
        model = nnx.merge(graphdef, params, rest)
        frozen = {"reference": params} if plan.reference else {}
        key = jax.random.PRNGKey(0)
        batch, prepared = plan.update.prepare(model, frozen, batch, key, controls)
        _, metrics = plan.update.loss(model, batch, key, controls)
        return {**prepared, **metrics}

    batch = _abstract_batch(plan.config, plan.policy, plan.streams)
    names = jax.eval_shape(metric_names, params, rest, batch, controls)
    for name, controller in plan.controllers.items():
        if controller.metric not in names:
            raise ValueError(
                f"controller {name!r} observes metric {controller.metric!r}, which the RL step "
                f"does not report (it reports {sorted(names)})"
            )


def build(config: RLConfig, *, task=None, mesh=None) -> Plan:
    """The checked :class:`Plan` of ``config`` (``task``: a prompt source -- ``train_problems``,
    ``eval_problems``, ``question``, ``score``, see ``entropix.tasks`` -- in place of the one
    ``config.task`` / ``config.data`` name; ``mesh``: in place of ``config.mesh``)."""
    main, streams = _terms(config)
    advantages = AdvantageStage(config.loss.rewards, config.loss.advantage)
    controllers = {}
    for i, spec in enumerate(config.controllers):
        if spec.name in controllers:
            raise ValueError(f"controllers.{i}: {spec.name!r} is configured twice")
        controllers[spec.name] = spec.build()
    _check_controls([*main.terms, *(t for c in streams.values() for t in c.terms)], controllers)
    if mesh is None:
        mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    _check_batch(config, mesh, advantages.group_relative)
    _check_dynamics(config)
    task = make_source(config.task, config.data, config.seed) if task is None else task
    if config.sft.steps and not hasattr(task, "sft_problems"):
        raise ValueError(
            f"sft.steps={config.sft.steps}: the prompt source {task.name!r} has no warm-up "
            "answers (a dataset's gold answers are final answers only); set sft.steps=0"
        )
    policy = build_policy(config.model, task, config.rollout, mesh, config.train.eval_prompts)
    needs = main.needs.union(*(c.needs for c in streams.values()))
    updates = config.update.epochs * config.update.mini_batches
    update = Update(
        main,
        streams,
        PolicyForward(config.rollout.temperature, "logits" in needs, config.update.vocab_chunk),
        advantages,
        old_logp_forward=updates > 1,
        reference="ref_logp" in needs,
        chunks=config.update.micro_batches,
        dynamics=config.dynamics,
    )
    optim = config.optim
    optimizer = optax.chain(
        optax.clip_by_global_norm(optim.clip_norm),
        optax.adamw(optim.lr, optim.b1, optim.b2, optim.eps, weight_decay=optim.weight_decay),
    )
    rollouts = Rollouts(
        task,
        policy.codec,
        policy.layout,
        config.rollout,
        mesh,
        seed=config.seed,
        streams=tuple(streams),
        eval_prompts=config.train.eval_prompts,
        eval_samples=config.train.eval_samples,
        eval_k=config.train.eval_k,
    )
    plan = Plan(config, task, policy, main, streams, controllers, mesh, rollouts, update, optimizer)
    _check_metrics(plan)
    return plan


def fit_config(config: RLConfig) -> TrainConfig:
    """The ``entropix.train.TrainConfig`` of an RL run."""
    run, update = config.train, config.update
    return TrainConfig(
        steps=run.steps,
        micro_batches=update.micro_batches,
        mini_batches=update.mini_batches,
        epochs=update.epochs,
        checkpoint_every=run.checkpoint_every,
        keep=run.keep,
        max_nonfinite=run.max_nonfinite,
        progress_every=run.eval_every or 10,
        tensorboard=run.tensorboard,
        seed=config.seed,
        probe_every=config.dynamics.every,
        eval_every=run.eval_every,
    )


def run(plan: Plan, run_dir, *, sft_dir=None, stream=None) -> FitResult:
    """Run a built plan in ``run_dir`` (resuming its checkpoints): the warm-up on a fresh start
    (in ``sft_dir``, default ``run_dir/sft``; runs with the same seed and SFT settings can
    share one), then the RL steps. Writes the resolved config to ``run_dir/config.yaml``.
    Returns ``entropix.train.fit``'s result."""
    config, run_dir = plan.config, Path(run_dir)
    sft_dir = run_dir / "sft" if sft_dir is None else Path(sft_dir)
    if jax.process_index() == 0:
        save_config(config, run_dir)  # what `entropix export` rebuilds the policy from

    def init_params():
        if config.sft.steps:
            return warm_start(
                sft_dir, config.sft, plan.task, plan.policy, plan.mesh, seed=config.seed,
                stream=stream,
            )  # fmt: skip
        return None if plan.policy.init_params is None else plan.policy.init_params()

    return fit(
        run_dir,
        model_fn=plan.policy.model_fn,
        optimizer=plan.optimizer,
        loss_fn=plan.update.loss,
        data=plan.rollouts,
        config=fit_config(config),
        controllers=plan.controllers,
        mesh=plan.mesh,
        stream=stream,
        init_params=init_params,
        frozen_fn=(lambda params: {"reference": params}) if plan.reference else None,
        prepare_fn=plan.update.prepare,
        weight_fn=plan.update.weight,
        probe_fn=plan.update.probe,
        evaluate=plan.rollouts.evaluate,
    )


def train(config: RLConfig, run_dir, *, task=None, mesh=None, sft_dir=None, stream=None) -> dict:
    """:func:`build` and :func:`run` ``config`` in ``run_dir``; returns :func:`summary`."""
    plan = build(config, task=task, mesh=mesh)
    run(plan, run_dir, sft_dir=sft_dir, stream=stream)
    return summary(run_dir)


def summary(run_dir) -> dict:
    """Final reward and entropy, collapse step, and the first / last eval accuracy of a run."""
    run_dir = Path(run_dir)
    out = summarize(run_dir)
    evals = [r["eval/accuracy"] for r in read_metrics(run_dir) if "eval/accuracy" in r]
    if evals:
        out.update({"first_eval_accuracy": evals[0], "final_eval_accuracy": evals[-1]})
    return out
