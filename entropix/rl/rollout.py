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

A term that declares ``sampled_at=control`` (AEPO) gets a second batch, the same prompts
sampled at temperature ``controls[control]`` (read from the train state), in
``batch["streams"][control]``.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from entropix.rl.config import RolloutConfig
from entropix.rollout import generate, make_sampler
from entropix.tasks.codecs import Layout, encode_prompts
from entropix.train.mesh import BATCH_AXES, batch_spec

ROLLOUT_STREAM = 2  # fold_in(PRNGKey(seed), 2): rollout randomness, apart from the step RNG
EVAL_STREAM = 3  # fold_in(PRNGKey(seed), 3): sampled evaluation


def to_global(x: np.ndarray, mesh: Mesh) -> jax.Array:
    """A global array of the full host batch ``x`` (every process holds all of it), rows
    sharded over (data, fsdp)."""
    x = np.asarray(x)
    sharding = NamedSharding(mesh, batch_spec(x.ndim))
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(x: jax.Array) -> np.ndarray:
    """All rows of a global array on this host (gathered across processes)."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def batch_rows(mesh: Mesh) -> int:
    """The number the rows of every batch must divide by (the data x fsdp devices)."""
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


class Rollouts:
    """``rollouts(position, state) -> batch`` (the ``data`` function of ``entropix.train.fit``)
    and ``evaluate(state)`` (greedy accuracy on the task's held-out problems)."""

    def __init__(
        self,
        task,
        codec,
        layout: Layout,
        config: RolloutConfig,
        mesh: Mesh,
        *,
        seed: int = 0,
        streams: tuple[str, ...] = (),
        eval_prompts: int = 0,
        eval_samples: int = 0,
        eval_k: tuple[int, ...] = (1,),
    ):
        self.task, self.codec, self.layout, self.config, self.mesh = (
            task,
            codec,
            layout,
            config,
            mesh,
        )
        self.seed, self.streams = seed, tuple(streams)
        self.sampler = make_sampler("temperature", temperature=config.temperature)
        self.eval_set = task.eval_problems(eval_prompts) if eval_prompts else []
        if eval_samples and max(eval_k) > eval_samples:
            raise ValueError(f"train.eval_k={eval_k} needs train.eval_samples >= {max(eval_k)}")
        self.eval_samples, self.eval_k = eval_samples, tuple(eval_k)

    def key(self, position: int) -> jax.Array:
        base = jax.random.fold_in(jax.random.PRNGKey(self.seed), ROLLOUT_STREAM)
        return jax.random.fold_in(base, position)

    def generate(self, state, problems, key, sampler, temperature):
        """Responses to ``problems`` from the policy of ``state`` (an ``entropix.rollout.Rollout``
        of global arrays)."""
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

    def _score(self, problems, tokens: np.ndarray) -> dict[str, np.ndarray]:
        scores, ended = [], []
        for problem, row in zip(problems, tokens, strict=True):
            ended.append(self.codec.ended(row))
            scores.append(self.task.score(problem, self.codec.decode(row)))
        ended = np.asarray(ended, bool)
        counts = ended if self.config.require_eos else np.ones_like(ended)
        return {
            "rewards": np.where(counts, [s.reward for s in scores], 0.0).astype(np.float32),
            "correct": (counts & np.asarray([s.correct for s in scores], bool)).astype(np.float32),
            "parsed": np.asarray([s.parsed for s in scores], np.float32),
            "ended": ended.astype(np.float32),
        }

    def __call__(self, position: int, state) -> dict:
        """The rollout batch of step ``position`` (global arrays; see ``entropix.rl.update``)."""
        config = self.config
        problems = [
            p for p in self.task.train_problems(position, config.prompts)
            for _ in range(config.group_size)
        ]  # fmt: skip
        groups = np.repeat(np.arange(config.prompts, dtype=np.int32), config.group_size)
        keys = jax.random.split(self.key(position), 1 + len(self.streams))
        out = self.generate(state, problems, keys[0], self.sampler, config.temperature)
        tokens = to_host(out.tokens)
        batch = {
            "prompt": out.prompt_tokens,
            "prompt_mask": out.prompt_mask,
            "response": out.tokens,
            "response_mask": out.mask,
            "rollout_logp": out.logprobs,
            "rollout_entropy": out.entropy,
            "group_ids": to_global(groups, self.mesh),
            "answer_mask": to_global(
                np.stack([self.codec.answer_mask(row) for row in tokens]), self.mesh
            ),
            **{k: to_global(v, self.mesh) for k, v in self._score(problems, tokens).items()},
        }
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

    def evaluate(self, state) -> dict[str, float]:
        """On the held-out problems: ``eval/accuracy`` (greedy pass@1: ended and correct) and,
        with ``eval_samples`` n, ``eval/pass@k`` / ``eval/maj@k`` of n samples per problem at
        the rollout temperature (key ``fold_in(fold_in(PRNGKey(seed), 3), step)``)."""
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
