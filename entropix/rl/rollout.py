"""The rollout stage: prompts -> ``entropix.rollout.generate`` on the sharded policy -> rewards.

Each RL step t (the train state's data position) takes the task's ``train_problems(t,
prompts)``, repeats each ``group_size`` times (group id = prompt index), encodes them with the
codec into the layout, and samples responses from the current policy at the rollout
temperature with the KV-cache generator. The parameters stay where the mesh put them: the
generation program is partitioned by GSPMD from their shardings and the prompts' (rows over
``data`` x ``fsdp``). The sampled ids come back to the host to be decoded and scored by the
task (``score(problem, text)``; with ``require_eos`` a reply that never emitted EOS earns 0).
Randomness: ``fold_in(fold_in(PRNGKey(seed), 2), t)``, so a resumed run samples exactly what it
sampled before. Several processes: every process builds the whole batch's prompts (cheap) and places
its own rows; the sampled ids are gathered to every process for scoring.

The rows come from the configured rollout strategy (``rollout.strategy``,
``entropix.rl.strategies``: plain sampling by default, or entropy-fork branching and trees):
it returns ``prompts x group_size`` rows, ordered here by prompt (group id = prompt index), and
``generated`` [B], the tokens generated for each row (their sum is ``rollout/tokens``). With
``answers`` (a reward shaper reads them, e.g. the label-free ``ttrl``) every reply's answer,
as the task extracts it without its label (``task.answer(problem, reply)``; None: no answer),
becomes an id ``answers`` [B] (equal ids = equal answers; -1 = none).

With ``rollout.steering`` (EAST, ``entropix.rl.steering``) the rows are sampled from the
policy steered along the entropy direction of an unsteered probe of the same prompts; the
batch then also holds ``probe_tokens`` / ``probe_entropy`` / ``probe_steered_entropy`` [B]
(the probe's sums spread over each prompt's rows; its tokens count in ``generated``).

A term that declares ``sampled_at=control`` (AEPO) gets a second batch, the same prompts
sampled at temperature ``controls[control]`` (read from the train state), in
``batch["streams"][control]``.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from entropix.rl.config import RolloutConfig
from entropix.rl.steering import PROBE_STREAM, Steering, spread_probe
from entropix.rl.strategies import Rows
from entropix.rollout import Rollout, generate, make_sampler
from entropix.tasks.codecs import CharCodec, ChatCodec, Layout, encode_prompts
from entropix.train.mesh import BATCH_AXES, batch_spec
from entropix.train.state import TrainState

ROLLOUT_STREAM = 2  # fold_in(PRNGKey(seed), 2): rollout randomness, apart from the step RNG
EVAL_STREAM = 3  # fold_in(PRNGKey(seed), 3): sampled evaluation


def to_global(x: np.ndarray, mesh: Mesh) -> jax.Array:
    """A global array of the full host batch ``x`` (every process holds all of it), rows
    sharded over (data, fsdp).

    Args:
        x: the whole batch [B, ...] on this host (rows a multiple of the data x fsdp devices).
        mesh: the device mesh.

    Returns:
        A global ``jax.Array`` of ``x``'s shape and dtype, rows sharded over the batch axes.
    """
    x = np.asarray(x)
    sharding = NamedSharding(mesh, batch_spec(x.ndim))
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(x: jax.Array) -> np.ndarray:
    """All rows of a global array on this host (gathered across processes).

    Args:
        x: a (possibly multi-process) global array.

    Returns:
        The whole array as a host numpy array.
    """
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def batch_rows(mesh: Mesh) -> int:
    """The number the rows of every batch must divide by (the data x fsdp devices).

    Args:
        mesh: the device mesh.

    Returns:
        The product of the mesh's batch-axis sizes.
    """
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


class Rollouts:
    """``rollouts(position, state) -> batch`` (the ``data`` function of ``entropix.train.fit``)
    and ``evaluate(state)`` (greedy accuracy on the task's held-out problems)."""

    def __init__(
        self,
        task: Any,
        codec: CharCodec | ChatCodec,
        layout: Layout,
        config: RolloutConfig,
        mesh: Mesh,
        *,
        seed: int = 0,
        streams: tuple[str, ...] = (),
        eval_prompts: int = 0,
        eval_samples: int = 0,
        eval_k: tuple[int, ...] = (1,),
        strategy: Callable[..., Rows] | None = None,
        answers: bool = False,
        steering: Steering | None = None,
    ) -> None:
        self.task, self.codec, self.layout, self.config, self.mesh = (
            task,
            codec,
            layout,
            config,
            mesh,
        )
        self.seed, self.streams = seed, tuple(streams)
        self.strategy = config.strategy.build() if strategy is None else strategy
        self.answers, self.steering = answers, steering
        self.sampler = make_sampler("temperature", temperature=config.temperature)
        self.eval_set = task.eval_problems(eval_prompts) if eval_prompts else []
        if eval_samples and max(eval_k) > eval_samples:
            raise ValueError(f"train.eval_k={eval_k} needs train.eval_samples >= {max(eval_k)}")
        self.eval_samples, self.eval_k = eval_samples, tuple(eval_k)

    def key(self, position: int) -> jax.Array:
        """The rollout key of step ``position``: ``fold_in(fold_in(PRNGKey(seed), 2), position)``.

        Args:
            position: the trainer step (the train state's data position).

        Returns:
            A PRNG key, a pure function of the seed and the step.
        """
        base = jax.random.fold_in(jax.random.PRNGKey(self.seed), ROLLOUT_STREAM)
        return jax.random.fold_in(base, position)

    def generate(
        self,
        state: TrainState,
        problems: Sequence[Any],
        key: jax.Array,
        sampler: Callable[[jax.Array, jax.Array], jax.Array],
        temperature: float,
    ) -> Rollout:
        """Responses to ``problems`` from the policy of ``state`` (an ``entropix.rollout.Rollout``
        of global arrays).

        Args:
            state: the train state whose ``model()`` is the policy.
            problems: the task's problems, one row each (a multiple of the data x fsdp
                devices).
            key: the sampling key.
            sampler: ``(key, logits) -> ids``, e.g. ``make_sampler("temperature", ...)``.
            temperature: the score temperature of the returned log-probs and entropies.

        Returns:
            A ``Rollout`` of global arrays: prompts [R, P] and responses [R, N].
        """
        prompt, prompt_mask = encode_prompts(self.codec, problems, self.layout)
        return generate(
            state.model(),
            to_global(prompt, self.mesh),
            to_global(prompt_mask, self.mesh),
            key=key,
            max_new_tokens=self.layout.new_tokens,
            sampler=sampler,
            eos_ids=self.codec.eos_id,
            pad_id=self.codec.pad_id,
            score_temperature=temperature,
        )

    def on_mesh(self, x: np.ndarray) -> jax.Array:
        """A host batch [R, ...] as a global array, its rows padded to a multiple of the mesh's
        data x fsdp devices with repeats of the last row (callers drop them again).

        Args:
            x: host array [R, ...] (any R >= 1).

        Returns:
            A global array [R + pad, ...], rows sharded over the batch axes.
        """
        x = np.asarray(x)
        pad = -len(x) % batch_rows(self.mesh)
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        return to_global(x, self.mesh)

    def generate_ids(
        self, model: Any, prompt: np.ndarray, prompt_mask: np.ndarray, key: jax.Array
    ) -> Rollout:
        """Responses of ``model`` to host prompt ids ``[R, L]`` at the rollout temperature, as
        host arrays (the ``generate`` a rollout strategy calls). Rows are padded to the mesh
        (:meth:`on_mesh`; sampling is per row, so the padding does not change the others).

        Args:
            model: the policy to sample (``state.model()``, or its steered wrapper).
            prompt: int32 [R, L] prompt ids (any R >= 1).
            prompt_mask: bool [R, L], the real prompt tokens.
            key: the sampling key.

        Returns:
            A ``Rollout`` of host numpy arrays with R rows: prompts [R, L], responses [R, N].
        """
        out = generate(
            model,
            self.on_mesh(prompt),
            self.on_mesh(prompt_mask),
            key=key,
            max_new_tokens=self.layout.new_tokens,
            sampler=self.sampler,
            eos_ids=self.codec.eos_id,
            pad_id=self.codec.pad_id,
            score_temperature=self.config.temperature,
        )
        return jax.tree.map(lambda x: to_host(x)[: len(prompt)], out)

    def _score(self, problems, tokens: np.ndarray) -> dict[str, np.ndarray]:
        scores, ended, answers = [], [], []
        for problem, row in zip(problems, tokens, strict=True):
            ended.append(self.codec.ended(row))
            reply = self.codec.decode(row)
            scores.append(self.task.score(problem, reply))
            if self.answers:
                counted = ended[-1] or not self.config.require_eos
                answers.append(self.task.answer(problem, reply) if counted else None)
        ended = np.asarray(ended, bool)
        counts = ended if self.config.require_eos else np.ones_like(ended)
        out = {
            "rewards": np.where(counts, [s.reward for s in scores], 0.0).astype(np.float32),
            "correct": (counts & np.asarray([s.correct for s in scores], bool)).astype(np.float32),
            "parsed": np.asarray([s.parsed for s in scores], np.float32),
            "ended": ended.astype(np.float32),
        }
        if self.answers:
            ids: dict[str, int] = {}
            out["answers"] = np.asarray(
                [-1 if a is None else ids.setdefault(a, len(ids)) for a in answers], np.int32
            )
        return out

    def _rows(self, position: int, state, problems, key) -> tuple[Rows, dict[str, np.ndarray]]:
        """The strategy's rows for ``problems``, ordered by prompt (checked: group_size each),
        and, with steering, the probe's per-row fields (``entropix.rl.steering``)."""
        config = self.config
        prompt, prompt_mask = encode_prompts(self.codec, problems, self.layout)
        model, fields = state.model(), {}
        if self.steering is not None:
            probe_key = jax.random.fold_in(key, PROBE_STREAM)
            probe = self.generate_ids(model, prompt, prompt_mask, probe_key)
            model, steered_entropy = self.steering.steer(
                model, probe, config.temperature, self.on_mesh, to_host
            )
        rows = self.strategy(
            lambda ids, mask, k: self.generate_ids(model, ids, mask, k),
            prompt,
            prompt_mask,
            group_size=config.group_size,
            key=key,
            step=position,
            pad_id=self.codec.pad_id,
        )
        counts = np.bincount(rows.prompt, minlength=len(problems))
        if counts.tolist() != [config.group_size] * len(problems):
            raise ValueError(
                f"rollout strategy {config.strategy.name!r} returned {counts.tolist()} rows per "
                f"prompt; every prompt needs rollout.group_size={config.group_size}"
            )
        order = np.argsort(rows.prompt, kind="stable")
        rows = jax.tree.map(lambda x: x[order], rows)
        if self.steering is not None:
            fields = spread_probe(probe, steered_entropy, rows.prompt)
        return rows, fields

    def __call__(self, position: int, state: TrainState) -> dict[str, Any]:
        """The rollout batch of step ``position`` (global arrays; see ``entropix.rl.update``)."""
        config = self.config
        unique = self.task.train_problems(position, config.prompts)
        problems = [p for p in unique for _ in range(config.group_size)]
        groups = np.repeat(np.arange(config.prompts, dtype=np.int32), config.group_size)
        keys = jax.random.split(self.key(position), 1 + len(self.streams))
        rows, probe = self._rows(position, state, unique, keys[0])
        out, tokens = rows.rollout, rows.rollout.tokens
        generated = rows.generated + probe.get("probe_tokens", 0.0)
        host = {
            "prompt": out.prompt_tokens,
            "prompt_mask": out.prompt_mask,
            "response": tokens,
            "response_mask": out.mask,
            "rollout_logp": out.logprobs,
            "rollout_entropy": out.entropy,
            "group_ids": groups,
            "generated": generated.astype(np.float32),
            **probe,
            "answer_mask": np.stack([self.codec.answer_mask(row) for row in tokens]),
            **self._score(problems, tokens),
        }
        batch = {k: to_global(v, self.mesh) for k, v in host.items()}
        if self.streams:
            values = jax.device_get(state.control_values())
            batch["streams"] = {}
            for key, control in zip(keys[1:], self.streams, strict=True):
                temperature = float(values[control])
                sampler = make_sampler("temperature", temperature=temperature)
                stream = self.generate(state, problems, key, sampler, config.temperature)
                scored = self._score(problems, to_host(stream.tokens))
                batch["streams"][control] = {
                    "prompt": stream.prompt_tokens,
                    "prompt_mask": stream.prompt_mask,
                    "response": stream.tokens,
                    "response_mask": stream.mask,
                    "rewards": to_global(scored["rewards"], self.mesh),
                }
        return batch

    def _replies(self, tokens: np.ndarray) -> list[str]:
        """Decoded replies; with ``require_eos`` an unterminated one reads as empty."""
        return [
            self.codec.decode(row) if self.codec.ended(row) or not self.config.require_eos else ""
            for row in tokens
        ]

    def _held_out(self, state, problems, key, sampler) -> np.ndarray:
        rows = batch_rows(self.mesh)
        padded = problems + problems[-1:] * (-len(problems) % rows)
        out = self.generate(state, padded, key, sampler, self.config.temperature)
        return to_host(out.tokens)[: len(problems)]

    def evaluate(self, state: TrainState) -> dict[str, float]:
        """On the held-out problems: ``eval/accuracy`` (greedy pass@1: ended and correct) and,
        with ``eval_samples`` n, ``eval/pass@k`` / ``eval/maj@k`` of n samples per problem at
        the rollout temperature (key ``fold_in(fold_in(PRNGKey(seed), 3), step)``).

        Args:
            state: the train state whose ``model()`` is the policy (its ``step`` seeds the
                sampled evaluation).

        Returns:
            ``{"eval/accuracy": ...}`` plus, with ``eval_samples``, the task's
            ``eval/pass@k`` / ``eval/maj@k`` for each k of ``eval_k``; empty without held-out
            problems.
        """
        if not self.eval_set:
            return {}
        tokens = self._held_out(state, self.eval_set, jax.random.PRNGKey(0), make_sampler("greedy"))
        metrics = {"eval/accuracy": float(np.mean(self._score(self.eval_set, tokens)["correct"]))}
        if self.eval_samples:
            n = self.eval_samples
            problems = [p for p in self.eval_set for _ in range(n)]
            key = jax.random.fold_in(jax.random.PRNGKey(self.seed), EVAL_STREAM)
            key = jax.random.fold_in(key, int(jax.device_get(state.step)))
            replies = self._replies(self._held_out(state, problems, key, self.sampler))
            grouped = [replies[i : i + n] for i in range(0, len(replies), n)]
            metrics.update(self.task.evaluate(self.eval_set, grouped, self.eval_k))
        return metrics
