"""The RL trainer: rollout -> rewards -> advantages -> update, on ``entropix.train.fit``.

    summary = entropix.rl.train(config, run_dir)          # config: an RLConfig
    plan = entropix.rl.build(config); result = entropix.rl.run(plan, run_dir)   # the parts

:func:`build` turns the config into a :class:`Plan` and checks it before anything is compiled
or trained (one-line ``ValueError`` for each problem): the loss terms, their declared needs
(full logits, a reference policy) and the controls they read (each must come from a
configured controller), the advantage shapers' inputs, ``group_size >= 2`` for group-relative
shapers, the rollout strategy against the group size and response length, the batch against
the mesh and the mini/micro-batches, and -- by tracing the update
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
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from entropix.config import save as save_config
from entropix.losses import Composed, compose
from entropix.losses import get as get_method
from entropix.losses.spear import ReplaySettings, ReplayTerm
from entropix.optim import supplier_of
from entropix.rl.advantages import AdvantageStage
from entropix.rl.config import RLConfig
from entropix.rl.policy import Policy, build_policy, make_source
from entropix.rl.replay import ReplayData
from entropix.rl.rollout import Rollouts, batch_rows
from entropix.rl.sft import sft_regularizer, warm_start
from entropix.rl.steering import build_steering
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
    replay: ReplaySettings | None = None  # the SPEAR buffer, when a loss term replays

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


def _split_replay(main: Composed) -> tuple[Composed, Composed | None, ReplaySettings | None]:
    """(main loss without its replay terms, the replay terms' loss, their buffer settings)."""
    replay = [t for t in main.terms if isinstance(t, ReplayTerm)]
    if not replay:
        return main, None, None
    if len(replay) > 1:
        raise ValueError("loss.terms: at most one replay term (spear) per run")
    rest = [t for t in main.terms if not isinstance(t, ReplayTerm)]
    if not rest:
        raise ValueError(
            "loss.terms: spear replays past wins next to an on-policy term; add ppo_clip"
        )
    return (
        compose(*rest, aggregate=main.aggregate),
        compose(*replay, aggregate=main.aggregate),
        replay[0].replay,
    )


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


def _check_ranges(config: RLConfig) -> None:
    """Each numeric setting inside its valid range (one line naming the key), before anything
    is built."""
    run, update, optim, sft, rollout = (
        config.train,
        config.update,
        config.optim,
        config.sft,
        config.rollout,
    )
    checks = [
        ("train.steps", run.steps, run.steps >= 1, ">= 1"),
        ("train.eval_every", run.eval_every, run.eval_every >= 0, ">= 0 (0: never)"),
        ("train.eval_prompts", run.eval_prompts, run.eval_prompts >= 0, ">= 0"),
        ("train.eval_samples", run.eval_samples, run.eval_samples >= 0, ">= 0"),
        ("train.checkpoint_every", run.checkpoint_every, run.checkpoint_every >= 1, ">= 1"),
        ("train.keep", run.keep, run.keep >= 1, ">= 1"),
        ("train.max_nonfinite", run.max_nonfinite, run.max_nonfinite >= 1, ">= 1"),
        ("update.epochs", update.epochs, update.epochs >= 1, ">= 1"),
        ("update.mini_batches", update.mini_batches, update.mini_batches >= 1, ">= 1"),
        ("update.micro_batches", update.micro_batches, update.micro_batches >= 1, ">= 1"),
        ("update.vocab_chunk", update.vocab_chunk, update.vocab_chunk >= 1, ">= 1"),
        ("optim.lr", optim.lr, optim.lr > 0, "> 0"),
        ("optim.b1", optim.b1, 0 <= optim.b1 < 1, "in [0, 1)"),
        ("optim.b2", optim.b2, 0 <= optim.b2 < 1, "in [0, 1)"),
        ("optim.eps", optim.eps, optim.eps > 0, "> 0"),
        ("optim.weight_decay", optim.weight_decay, optim.weight_decay >= 0, ">= 0"),
        ("optim.clip_norm", optim.clip_norm, optim.clip_norm > 0, "> 0"),
        ("sft.steps", sft.steps, sft.steps >= 0, ">= 0 (0: no warm-up)"),
        ("sft.batch_size", sft.batch_size, sft.batch_size >= 1, ">= 1"),
        ("sft.lr", sft.lr, sft.lr > 0, "> 0"),
        ("rollout.temperature", rollout.temperature, rollout.temperature > 0, "> 0"),
        ("rollout.max_new_tokens", rollout.max_new_tokens, rollout.max_new_tokens >= 0, ">= 0"),
        (
            "rollout.max_prompt_tokens",
            rollout.max_prompt_tokens,
            rollout.max_prompt_tokens >= 0,
            ">= 0",
        ),
    ]
    for key, value, ok, bound in checks:
        if not ok:
            raise ValueError(f"{key} must be {bound}; got {value}")
    if run.eval_every and not run.eval_prompts:
        raise ValueError(
            f"train.eval_every={run.eval_every} evaluates on train.eval_prompts=0 problems: "
            "set eval_prompts >= 1, or eval_every=0 for no evaluation"
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
        (d.row_stride >= 1, f"dynamics.row_stride must be >= 1 (1: every row); got {d.row_stride}"),
        (
            d.row_stride < 1  # refused above
            or not d.every  # nothing is probed
            or rows % (d.row_stride * config.update.micro_batches) == 0,
            f"dynamics.row_stride={d.row_stride}: the {rows} rows of a batch must split into "
            f"row_stride x update.micro_batches = "
            f"{d.row_stride * config.update.micro_batches} equal parts",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _abstract_batch(config: RLConfig, policy: Policy, streams, replay: bool = False) -> dict:
    steered = (
        ("probe_tokens", "probe_entropy", "probe_steered_entropy")
        if config.rollout.steering is not None
        else ()
    )
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
        "answers": s((rows,), jnp.int32),
        **{
            k: s((rows,), jnp.float32)
            for k in ("rewards", "correct", "parsed", "ended", "generated", *steered)
        },
    }
    if streams:
        stream = {**tokens, "rewards": s((rows,), jnp.float32)}
        batch["streams"] = {control: stream for control in streams}
    if replay:
        batch["replay"] = {
            **tokens,
            "old_logp": s((rows, n), jnp.float32),
            "advantages": s((rows,), jnp.float32),
        }
    return batch


def _strategy(config: RLConfig, new_tokens: int):
    """The configured rollout strategy, checked against the group size and response length."""
    spec = config.rollout.strategy
    kind = get_method(spec.name).kind
    if kind != "rollout":
        raise ValueError(f"rollout.strategy: {spec.name!r} is a {kind} method, not a rollout one")
    strategy = spec.build()
    strategy.check(config.rollout.group_size, new_tokens)
    return strategy


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

    batch = _abstract_batch(plan.config, plan.policy, plan.streams, plan.replay is not None)
    names = jax.eval_shape(metric_names, params, rest, batch, controls)
    for name, controller in plan.controllers.items():
        if controller.metric not in names:
            raise ValueError(
                f"controller {name!r} observes metric {controller.metric!r}, which the RL step "
                f"does not report (it reports {sorted(names)})"
            )


def build(config: RLConfig, *, task: Any = None, mesh: jax.sharding.Mesh | None = None) -> Plan:
    """The checked :class:`Plan` of ``config`` (``task``: a prompt source -- ``train_problems``,
    ``eval_problems``, ``question``, ``score``, see ``entropix.tasks`` -- in place of the one
    ``config.task`` / ``config.data`` name; ``mesh``: in place of ``config.mesh``).

    Args:
        config: the RL run's config.
        task: a prompt source to use instead of the one of ``config.task`` / ``config.data``;
            default None (built from the config).
        mesh: the device mesh to use instead of ``config.mesh``'s; default None (built from
            the config).

    Returns:
        The checked ``Plan``: task, policy, composed losses, controllers, mesh, rollouts,
        update hooks, optimizer and replay settings. Nothing is compiled or trained yet
        (only the update is traced with abstract values).

    Raises:
        ValueError: one line naming the first problem found in the config.
    """
    main, streams = _terms(config)
    main, replay, replay_settings = _split_replay(main)
    advantages = AdvantageStage(config.loss.rewards, config.loss.advantage)
    controllers = {}
    for i, spec in enumerate(config.controllers):
        if spec.name in controllers:
            raise ValueError(f"controllers.{i}: {spec.name!r} is configured twice")
        controllers[spec.name] = spec.build()
    losses = [main, *streams.values(), *([replay] if replay else [])]
    _check_controls([t for c in losses for t in c.terms], controllers)
    if mesh is None:
        mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    _check_batch(config, mesh, advantages.group_relative)
    _check_ranges(config)
    _check_dynamics(config)
    task = make_source(config.task, config.data, config.seed) if task is None else task
    if config.sft.steps and not hasattr(task, "sft_problems"):
        raise ValueError(
            f"sft.steps={config.sft.steps}: the prompt source {task.name!r} has no warm-up "
            "answers (a dataset's gold answers are final answers only); set sft.steps=0"
        )
    if config.sft.steps:
        sft_regularizer(config.sft)  # a bad sft.regularizer fails here, not after the build
    policy = build_policy(config.model, task, config.rollout, mesh, config.train.eval_prompts)
    strategy = _strategy(config, policy.layout.new_tokens)
    steering = build_steering(config.rollout.steering)
    if steering is not None:
        steering.check(policy.config.num_layers)
    if advantages.answers and not hasattr(task, "answer"):
        raise ValueError(
            f"loss.rewards: a shaper votes on answers, but the prompt source {task.name!r} has "
            "no label-free answer(problem, response)"
        )
    needs = frozenset().union(*(c.needs for c in losses))
    updates = config.update.epochs * config.update.mini_batches
    update = Update(
        main,
        streams,
        PolicyForward(config.rollout.temperature, "logits" in needs, config.update.vocab_chunk),
        advantages,
        old_logp_forward=updates > 1,
        behaviour_logp=steering is not None,
        reference="ref_logp" in needs,
        chunks=config.update.micro_batches,
        dynamics=config.dynamics,
        replay=replay,
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
        strategy=strategy,
        answers=advantages.answers,
        steering=steering,
    )
    plan = Plan(
        config, task, policy, main, streams, controllers, mesh, rollouts, update, optimizer,
        replay=replay_settings,
    )  # fmt: skip
    _check_metrics(plan)
    return plan


def fit_config(config: RLConfig) -> TrainConfig:
    """The ``entropix.train.TrainConfig`` of an RL run.

    Args:
        config: the RL run's config (its ``train``, ``update``, ``dynamics`` and ``seed``).

    Returns:
        The ``TrainConfig`` (stage ``"rl"``): steps, mini / micro-batches, epochs,
        checkpointing, logging, probe and evaluation cadence.
    """
    run, update = config.train, config.update
    return TrainConfig(
        steps=run.steps,
        micro_batches=update.micro_batches,
        mini_batches=update.mini_batches,
        epochs=update.epochs,
        checkpoint_every=run.checkpoint_every,
        keep=run.keep,
        max_nonfinite=run.max_nonfinite,
        stage="rl",
        progress_every=run.eval_every or 10,
        tensorboard=run.tensorboard,
        seed=config.seed,
        probe_every=config.dynamics.every,
        eval_every=run.eval_every,
    )


def _replay_data(plan: Plan, run_dir: Path) -> ReplayData:
    """The rollouts with SPEAR's replayed batch, its buffer snapshots in ``run_dir/replay``."""
    config, layout = plan.config, plan.policy.layout
    return ReplayData(
        plan.rollouts,
        plan.replay,
        run_dir / "replay",
        plan.mesh,
        prompt_len=layout.prompt_len,
        new_tokens=layout.new_tokens,
        seed=config.seed,
        every=config.train.checkpoint_every,
        keep=config.train.keep,
    )


def run(
    plan: Plan,
    run_dir: str | Path,
    *,
    sft_dir: str | Path | None = None,
    stream: TextIO | None = None,
) -> FitResult:
    """Run a built plan in ``run_dir`` (resuming its checkpoints): the warm-up on a fresh start
    (in ``sft_dir``, default ``run_dir/sft``; runs with the same seed and SFT settings can
    share one), then the RL steps. Writes the resolved config to ``run_dir/config.yaml``.
    Returns ``entropix.train.fit``'s result.

    Args:
        plan: the plan from :func:`build`.
        run_dir: the run directory (checkpoints, metrics, ``config.yaml``).
        sft_dir: the warm-up's run directory; default ``run_dir/sft``.
        stream: where progress goes; default stdout.

    Returns:
        ``entropix.train.FitResult``: final state, resumed-from step, last metrics,
        checkpoint problems.
    """
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
        data=plan.rollouts if plan.replay is None else _replay_data(plan, run_dir),
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


def train(
    config: RLConfig,
    run_dir: str | Path,
    *,
    task: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    sft_dir: str | Path | None = None,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """:func:`build` and :func:`run` ``config`` in ``run_dir``; returns :func:`summary`.

    Args:
        config: the RL run's config.
        run_dir: the run directory (resumed when it holds checkpoints).
        task: a prompt source in place of the config's (see :func:`build`); default None.
        mesh: a device mesh in place of ``config.mesh``'s; default None.
        sft_dir: the warm-up's run directory; default ``run_dir/sft``.
        stream: where progress goes; default stdout.

    Returns:
        The run's :func:`summary`.
    """
    plan = build(config, task=task, mesh=mesh)
    run(plan, run_dir, sft_dir=sft_dir, stream=stream)
    return summary(run_dir)


def summary(run_dir: str | Path) -> dict[str, Any]:
    """Final reward and entropy, collapse step, and the first / last eval accuracy of a run.

    Args:
        run_dir: the run directory (reads its ``metrics.jsonl``).

    Returns:
        ``final_reward``, ``final_entropy``, ``initial_entropy`` (floats, NaN when not
        logged), ``collapse_step`` (int or None) and, when the run evaluated,
        ``first_eval_accuracy`` / ``final_eval_accuracy``.
    """
    run_dir = Path(run_dir)
    out = summarize(run_dir)
    evals = [r["eval/accuracy"] for r in read_metrics(run_dir) if "eval/accuracy" in r]
    if evals:
        out.update({"first_eval_accuracy": evals[0], "final_eval_accuracy": evals[-1]})
    return out
