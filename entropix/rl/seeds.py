"""Seeds as one program: a whole GRPO run over S seeds compiled into one ``jax.vmap``-ped program.

    result = entropix.rl.run_seeds(config, seeds=(0, 1, 2, 3, 4, 5, 6, 7))
    result.metrics["reward"], result.metrics["entropy"]      # [S, train.steps]

For a task whose reward can be computed on device (``entropix.tasks.jax_tasks``: addition and
sorting with the character codec), nothing of an RL run needs the host, so one seed's run is
a pure function ``(initial state, seed) -> (final state, outputs)`` and S seeds are its
``vmap``. Per seed, in one program:

1. supervised warm-up when ``sft.steps > 0``: ``sft.steps`` steps of the trainer's warm-up
   loss (``entropix.rl.sft_loss``, Adam at ``sft.lr``, batches of ``sft.batch_size`` problems
   with their canonical answers) on the seed's init, then a fresh RL state from its weights
   (new AdamW state, the frozen reference taken there), as ``entropix.rl.train`` starts RL;
2. ``lax.scan`` over ``train.steps`` RL steps, each: problems sampled on device ->
   ``entropix.rollout.decode`` (KV cache, the rollout sampler) -> the JAX reward -> the
   compiled train step of the RL trainer (``entropix.train.make_train_step`` with the plan's
   ``Update`` hooks: reward / advantage shapers, the composed loss, epochs / mini- /
   micro-batches, the optimiser from ``optim``, controllers, non-finite guard);
3. evaluation after the last step when ``train.eval_prompts > 0``: greedy replies to
   ``eval_prompts`` held-out problems (the same for every seed) and, with ``eval_samples``
   n, n samples per problem at the rollout temperature (pass@k and maj@k are computed from
   them on the host by ``entropix.tasks.evaluate_samples``, as the trainer does).

Initialisation: seed s starts from the trainer's seeded init (``entropix.train.init_state``
with seed s: model from ``fold_in(PRNGKey(s), 0)``, step RNG ``fold_in(PRNGKey(s), 1)``),
built on the host before the program. Randomness in the program: generation at RL step t
uses the trainer's rollout key (``fold_in(fold_in(PRNGKey(s), 2), t)``); problems come from
``fold_in(fold_in(PRNGKey(s), 4), t)`` (warm-up: stream 5) -- on-device draws, not the host
task's numpy streams, so a seed's problems differ from ``entropix.rl.train``'s. Held-out
problems: ``PRNGKey(6)``, every seed.

Not run here (a config that needs them is refused with a one-line ``ValueError``): tasks
without a JAX reward, the chat codecs, an answer marker, rollout strategies other than
``sample``, terms sampled at a controller's temperature (``sampled_at``, AEPO), replay terms
(SPEAR), label-free answer votes (TTRL), the dynamics probe (``dynamics.every`` must be 0),
several processes. The program runs on one device (the ``mesh`` section is not used); ``eval_every``
and checkpointing have no meaning inside it (one evaluation at the end; nothing is written).
"""

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from entropix.rl.config import RLConfig
from entropix.rl.rollout import EVAL_STREAM, ROLLOUT_STREAM
from entropix.rl.sft import sft_loss, sft_regularizer
from entropix.rl.trainer import Plan, build
from entropix.rl.update import PolicyForward
from entropix.rollout import decode, make_sampler
from entropix.tasks import evaluate_samples
from entropix.tasks.jax_tasks import JaxTask, jax_task, reply_ids
from entropix.train import MetricsLogger, init_state, make_mesh, make_train_step
from entropix.train.state import TrainState
from entropix.train.step import RESERVED_PREFIXES, NonFiniteError

PROBLEM_STREAM = 4  # fold_in(PRNGKey(seed), 4): the RL steps' problems
SFT_STREAM = 5  # fold_in(PRNGKey(seed), 5): the warm-up's problems
EVAL_PROBLEMS = 6  # PRNGKey(6): the held-out problems, the same for every seed


@dataclasses.dataclass
class SeedsResult:
    """What :func:`run_seeds` returns, seeds on axis 0: ``metrics`` {name: [S, steps]} (every
    metric of the RL step: ``reward``, ``entropy``, ``accuracy``, ``loss``, ``optim/...``),
    ``sft`` {name: [S, sft.steps]} (the warm-up step's metrics: ``loss``, ``entropy``, ...;
    empty without a warm-up),
    ``evaluation`` {name: [S]} (``eval/accuracy``, ``eval/pass@k``, ``eval/maj@k``; empty
    without evaluation) and ``state``: the final ``TrainState`` of every seed, stacked."""

    seeds: tuple[int, ...]
    metrics: dict[str, np.ndarray]
    sft: dict[str, np.ndarray]
    evaluation: dict[str, np.ndarray]
    state: TrainState

    def write(self, run_dir: str | Path) -> list[Path]:
        """Write each seed's RL metrics as a run would: ``<run_dir>/seed<s>/metrics.jsonl``, one
        record per step (``step`` 1, 2, ...; the evaluation joins the last one), so
        ``entropix.runs.summarize``, ``entropix plot`` and ``entropix compare`` read them.
        Returns the seeds' directories.

        Args:
            run_dir: the directory the ``seed<s>/`` run directories are written under.

        Returns:
            ``<run_dir>/seed<s>`` for each seed, in the order of ``seeds``.
        """
        dirs = []
        for i, seed in enumerate(self.seeds):
            directory = Path(run_dir) / f"seed{seed}"
            steps = len(next(iter(self.metrics.values()))[i])
            logger = MetricsLogger(directory, total_steps=steps, tensorboard=False,
                                   progress_every=steps)  # fmt: skip
            for t in range(steps):
                record = {k: v[i, t] for k, v in self.metrics.items()}
                if t == steps - 1:
                    record.update({k: v[i] for k, v in self.evaluation.items()})
                logger.log(t + 1, record)
            logger.close()
            dirs.append(directory)
        return dirs


def _refuse(config: RLConfig, plan: Plan) -> None:
    checks = [
        (
            jax.process_count() == 1,
            f"the seeds program runs in one process; this job has {jax.process_count()}",
        ),
        (
            not plan.streams,
            f"loss terms sampled at a controller's temperature ({', '.join(plan.streams)}) "
            "need a second host-side sampler; the seeds program does not run them",
        ),
        (
            config.rollout.strategy.name == "sample",
            f"rollout.strategy={config.rollout.strategy.name!r} builds its rows on the host; "
            "the seeds program samples plain groups (strategy sample)",
        ),
        (
            config.rollout.steering is None,
            "rollout.steering probes and steers the policy on the host; the seeds program "
            "samples the policy itself",
        ),
        (
            plan.replay is None,
            "a replay term (spear) keeps a host-side buffer; the seeds program does not run it",
        ),
        (
            not plan.rollouts.answers,
            "a reward shaper votes on label-free answers, which the host extracts; the seeds "
            "program does not run it",
        ),
        (
            config.dynamics.every == 0,
            f"dynamics.every={config.dynamics.every}: the seeds program does not run the "
            "dynamics probe; set dynamics.every=0",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


class SeedsProgram:
    """One seed's whole run as a traceable function (:meth:`run_one`) and its parts, from the
    checked :class:`~entropix.rl.Plan` of ``config`` (see the module docstring)."""

    def __init__(self, config: RLConfig, *, task: Any = None) -> None:
        device_mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
        self.config, self.plan = config, build(config, task=task, mesh=device_mesh)
        _refuse(config, self.plan)
        policy = self.plan.policy
        self.task: JaxTask = jax_task(self.plan.task, policy.codec, policy.layout)
        if config.sft.steps and policy.layout.new_tokens < self.task.answer_len + 1:
            raise ValueError(
                f"sft.steps={config.sft.steps}: warm-up answers take up to "
                f"{self.task.answer_len + 1} tokens (with EOS), more than the layout's "
                f"{policy.layout.new_tokens} new tokens (raise rollout.max_new_tokens)"
            )
        update, u = self.plan.update, config.update
        self.train_step = make_train_step(
            update.loss,
            micro_batches=u.micro_batches,
            mini_batches=u.mini_batches,
            epochs=u.epochs,
            weight_fn=update.weight,
            prepare_fn=update.prepare,
            donate=False,
        )
        regularizer = sft_regularizer(config.sft)  # the warm-up loss of entropix.rl.warm_start
        needs = frozenset() if regularizer is None else regularizer.all_needs
        forward = PolicyForward(full_logits="logits" in needs)
        self.sft_step = make_train_step(sft_loss(forward, regularizer), donate=False)
        self.mesh = device_mesh

    def initial_state(self, seed: int) -> TrainState:
        """Seed ``seed``'s starting state, as the trainer initialises it (before any warm-up).

        Args:
            seed: the seed (model init ``fold_in(PRNGKey(seed), 0)``, step RNG
                ``fold_in(PRNGKey(seed), 1)``).

        Returns:
            The ``TrainState`` on the program's one device (pretrained weights when the
            policy has them).
        """
        plan = self.plan
        _, _, create = init_state(
            plan.policy.model_fn,
            plan.optimizer,
            self.mesh,
            seed=int(seed),
            controllers=plan.controllers,
            frozen_fn=(lambda params: {"reference": params}) if plan.reference else None,
        )
        return create(None if plan.policy.init_params is None else plan.policy.init_params())

    def initial_states(self, seeds: Iterable[int]) -> TrainState:
        """:meth:`initial_state` of every seed, stacked on a leading axis.

        Args:
            seeds: the S seeds.

        Returns:
            The states stacked: every leaf ``[S, ...]``.
        """
        states = [self.initial_state(s) for s in seeds]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    def _generate(self, state: TrainState, prompt, prompt_mask, key, sampler):
        model = state.model()
        model.eval()
        codec = self.plan.policy.codec
        return decode(
            model,
            prompt,
            prompt_mask,
            key,
            max_new_tokens=self.plan.policy.layout.new_tokens,
            sampler=sampler,
            eos_ids=(codec.eos_id,),
            pad_id=codec.pad_id,
            score_temperature=self.config.rollout.temperature,
        )

    def rollout(
        self, state: TrainState, seed: int | jax.Array, position: int | jax.Array
    ) -> dict[str, jax.Array]:
        """The rollout batch of RL step ``position`` (the fields ``entropix.rl.Rollouts``
        gives), on device.

        Args:
            state: the seed's train state (its policy samples the responses).
            seed: the seed (an int or a traced int32 scalar).
            position: the RL step (an int or a traced int32 scalar).

        Returns:
            The batch of ``entropix.rl.update``'s layout, B = prompts x group_size rows:
            prompts, responses, masks, ``rollout_logp`` / ``rollout_entropy``, ``group_ids``,
            ``generated``, ``answer_mask`` and the task's ``rewards`` / ``correct`` /
            ``parsed`` / ``ended``.
        """
        config = self.config.rollout
        base = jax.random.PRNGKey(seed)
        key = jax.random.fold_in(jax.random.fold_in(base, PROBLEM_STREAM), position)
        problems = self.task.sample(key, config.prompts)
        rows = lambda x: jnp.repeat(x, config.group_size, axis=0)
        key = jax.random.fold_in(jax.random.fold_in(base, ROLLOUT_STREAM), position)
        key = jax.random.split(key, 1)[0]  # the first of Rollouts' keys: its main batch
        out = self._generate(
            state, rows(problems["prompt"]), rows(problems["prompt_mask"]), key,
            self.plan.rollouts.sampler,
        )  # fmt: skip
        scored = self.task.score(out.tokens, rows(problems["target"]), config.require_eos)
        return {
            "prompt": out.prompt_tokens,
            "prompt_mask": out.prompt_mask,
            "response": out.tokens,
            "response_mask": out.mask,
            "rollout_logp": out.logprobs,
            "rollout_entropy": out.entropy,
            "group_ids": jnp.repeat(jnp.arange(config.prompts, dtype=jnp.int32), config.group_size),
            "generated": jnp.sum(out.mask, axis=1).astype(jnp.float32),
            "answer_mask": jnp.ones(out.tokens.shape, bool),
            **scored,
        }

    def warm_up(
        self, state: TrainState, seed: int | jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """``sft.steps`` warm-up steps from ``state``'s weights, then the RL state to start
        from (fresh optimiser state, reference from the warmed-up weights); and the warm-up's
        per-step metrics.

        Args:
            state: the seed's initial RL state.
            seed: the seed (an int or a traced int32 scalar) of the warm-up's problems.

        Returns:
            (state, metrics): the RL state with the warmed-up parameters, and the warm-up
            step's metrics {name: [sft.steps]} (without the reserved-prefix ones).
        """
        sft = self.config.sft
        model = state.model()
        sft_state = TrainState.create(model, optax.adam(sft.lr), rng=state.rng, wrt=state.wrt)
        base = jax.random.fold_in(jax.random.PRNGKey(seed), SFT_STREAM)

        def step(sft_state, position):
            problems = self.task.sample(jax.random.fold_in(base, position), sft.batch_size)
            batch = {k: problems[k] for k in ("prompt", "prompt_mask", "answer", "answer_mask")}
            return self.sft_step(sft_state, batch)

        sft_state, metrics = jax.lax.scan(step, sft_state, jnp.arange(sft.steps))
        params = sft_state.params
        frozen = {"reference": params} if self.plan.reference else state.frozen
        state = state.replace(params=params, opt_state=state.tx.init(params), frozen=frozen)
        return state, {k: v for k, v in metrics.items() if not k.startswith(RESERVED_PREFIXES)}

    def evaluate(self, state: TrainState, seed: int | jax.Array) -> dict[str, Any]:
        """Held-out replies of ``state``'s policy: greedy ``correct`` [E] and, with
        ``eval_samples`` n, ``sampled`` scores of n samples per problem (see the module
        docstring).

        Args:
            state: the seed's final train state.
            seed: the seed (an int or a traced int32 scalar) of the sampled evaluation.

        Returns:
            ``{"correct": [E]}`` (float32 0/1) and, with ``eval_samples`` n, ``"sampled"``:
            :meth:`replies` of the E x n samples.
        """
        run, config = self.config.train, self.config.rollout
        problems = self.task.sample(jax.random.PRNGKey(EVAL_PROBLEMS), run.eval_prompts)
        args = (problems["prompt"], problems["prompt_mask"])
        greedy = self._generate(state, *args, jax.random.PRNGKey(0), make_sampler("greedy"))
        target = problems["target"]
        out = {"correct": self.task.score(greedy.tokens, target, config.require_eos)["correct"]}
        if run.eval_samples:
            n = run.eval_samples
            key = jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_STREAM)
            key = jax.random.fold_in(key, state.step)
            rows = [jnp.repeat(x, n, axis=0) for x in args]
            sampled = self._generate(state, *rows, key, self.plan.rollouts.sampler)
            out["sampled"] = self.replies(sampled.tokens, jnp.repeat(target, n, axis=0))
        return out

    def replies(self, tokens: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
        """Scores of generated ids ``tokens`` [B, N] against ``target`` (``JaxTask.score``)
        and the replies' ids and lengths (``reply``, ``length``: what :meth:`evaluation`
        votes on).

        Args:
            tokens: int [B, N] generated ids.
            target: int [B, answer_len] the answers' ids (``JaxTask.sample``'s ``target``).

        Returns:
            ``rewards``, ``correct``, ``parsed``, ``ended`` (float32 [B]), ``reply`` (int
            [B, N] reply ids packed left) and ``length`` (int32 [B]).
        """
        ids, length = reply_ids(tokens)
        scored = self.task.score(tokens, target, self.config.rollout.require_eos)
        return {**scored, "reply": ids, "length": length}

    def run_one(
        self, state: TrainState, seed: int | jax.Array
    ) -> tuple[TrainState, dict[str, dict[str, Any]]]:
        """One seed's whole run from its :meth:`initial_state` (traceable; ``seed`` an int32
        scalar): ``(final state, {"metrics": {name: [steps]}, "sft": ..., "eval": ...})``.

        Args:
            state: the seed's initial state.
            seed: the seed, an int32 scalar.

        Returns:
            (final state, outputs): ``outputs["metrics"]`` {name: [train.steps]},
            ``outputs["sft"]`` the warm-up's metrics ({} without one) and ``outputs["eval"]``
            :meth:`evaluate`'s outputs ({} without evaluation).
        """
        out = {"sft": {}, "eval": {}}
        if self.config.sft.steps:
            state, out["sft"] = self.warm_up(state, seed)

        def step(state, position):
            return self.train_step(state, self.rollout(state, seed, position))

        state, out["metrics"] = jax.lax.scan(step, state, jnp.arange(self.config.train.steps))
        if self.config.train.eval_prompts:
            out["eval"] = self.evaluate(state, seed)
        return state, out

    def run_all(
        self, states: TrainState, seeds: jax.Array
    ) -> tuple[TrainState, dict[str, dict[str, Any]]]:
        """:meth:`run_one` vmapped over stacked ``states`` and ``seeds`` [S].

        Args:
            states: the S initial states stacked (:meth:`initial_states`).
            seeds: int32 [S], the seeds.

        Returns:
            :meth:`run_one`'s (final states, outputs), every leaf with a leading S axis.
        """
        return jax.vmap(self.run_one)(states, seeds)

    def evaluation(self, out: dict) -> dict[str, np.ndarray]:
        """``eval/accuracy`` and, with sampled replies, ``eval/pass@k`` / ``eval/maj@k`` per
        seed from the program's ``eval`` outputs (pass@k / maj@k as the trainer reports them:
        votes go to well-formed replies, which earn nothing when ``require_eos`` and unended).

        Args:
            out: the program's ``eval`` outputs, leaves [S, ...] ({}: no evaluation).

        Returns:
            {name: [S]}: ``eval/accuracy`` and, with sampled replies, ``eval/pass@k`` /
            ``eval/maj@k`` for each k of ``train.eval_k``; {} without evaluation.
        """
        if not out:
            return {}
        run = self.config.train
        result = {"eval/accuracy": np.asarray(out["correct"]).mean(axis=1)}
        if "sampled" in out:
            n, s = run.eval_samples, jax.device_get(out["sampled"])
            votes = s["parsed"] > 0
            if self.config.rollout.require_eos:
                votes &= s["ended"] > 0
            per_seed = []
            for i in range(len(s["correct"])):
                keys = [
                    tuple(s["reply"][i, j, : s["length"][i, j]]) if votes[i, j] else None
                    for j in range(len(votes[i]))
                ]
                correct = s["correct"][i] > 0
                per_seed.append(
                    evaluate_samples(
                        [correct[j : j + n] for j in range(0, len(correct), n)],
                        [keys[j : j + n] for j in range(0, len(keys), n)],
                        run.eval_k,
                    )
                )
            for name in per_seed[0]:
                result[name] = np.asarray([m[name] for m in per_seed])
        return result


def _check_guard(seeds, metrics: dict, limit: int) -> None:
    streak = np.asarray(metrics["guard/nonfinite_streak"])
    for i, seed in enumerate(seeds):
        bad = np.flatnonzero(streak[i] >= limit)
        if bad.size:
            raise NonFiniteError(
                f"seed {seed}: {limit} non-finite steps in a row by step {int(bad[0])} "
                f"(limit train.max_nonfinite={limit})"
            )


def run_seeds(config: RLConfig, seeds: Iterable[int], *, task: Any = None) -> SeedsResult:
    """Run ``config`` for every seed of ``seeds`` as one compiled, vmapped program (see the
    module docstring); raises ``NonFiniteError`` when a seed hit ``train.max_nonfinite``
    skipped steps in a row.

    Args:
        config: the RL run's config (one the seeds program runs; others raise ``ValueError``).
        seeds: the S seeds (at least one).
        task: a prompt source in place of the config's (``entropix.rl.build``); default None.

    Returns:
        The ``SeedsResult``: RL metrics {name: [S, steps]}, warm-up metrics, evaluation
        {name: [S]} and the stacked final states.

    Raises:
        ValueError: for no seeds or a config the program does not run.
        NonFiniteError: when a seed hit ``train.max_nonfinite`` skipped steps in a row.
    """
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("run_seeds: give at least one seed")
    program = SeedsProgram(config, task=task)
    states = program.initial_states(seeds)
    state, out = jax.jit(program.run_all)(states, jnp.asarray(seeds, jnp.int32))
    metrics = {k: np.asarray(v) for k, v in jax.device_get(out["metrics"]).items()}
    _check_guard(seeds, metrics, config.train.max_nonfinite)
    sft = {k: np.asarray(v) for k, v in jax.device_get(out["sft"]).items()}
    return SeedsResult(seeds, metrics, sft, program.evaluation(out["eval"]), state)
