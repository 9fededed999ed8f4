"""The policy an RL run starts from: the prompt source, the model (how to build it, its
starting weights), the codec that turns problems into ids and the sequence layout.

Building a policy reads configs and tokenizers only; pretrained weights are read when
``init_params()`` is called (on a fresh start, after every check has passed), tensor by tensor
onto the mesh by the partition rules.
"""

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flax import nnx
from jax.sharding import Mesh, NamedSharding

from entropix import tasks
from entropix.models import Llama, LlamaConfig, get_preset
from entropix.models.hf_config import config_from_hf
from entropix.models.loaders import (
    config_from_gguf,
    load_gguf,
    load_hf,
    open_gguf,
    smollm2_gguf_path,
)
from entropix.models.tokenizer import tokenizer_from_gguf, tokenizer_from_hf
from entropix.rl.config import DataConfig, ModelConfig, RolloutConfig, TaskConfig
from entropix.tasks.codecs import CharCodec, ChatCodec, Layout, layout_for
from entropix.train.mesh import DEFAULT_RULES, spec_for

PROBE_PROBLEMS = 256  # a generated task's prompts that size the layout (bounded lengths)


@dataclasses.dataclass(frozen=True)
class Policy:
    """``model_fn(rngs)`` builds the decoder (inside ``jit``, on the mesh); ``init_params()``
    gives pretrained weights (None: the seeded initialisation); ``codec`` / ``layout`` map
    problems to token ids."""

    config: LlamaConfig
    model_fn: Callable[[nnx.Rngs], nnx.Module]
    init_params: Callable[[], nnx.State] | None
    codec: object
    layout: Layout


def make_source(
    task: TaskConfig, data: DataConfig, seed: int = 0
) -> tasks.MathDataset | tasks.GeneratedTask:
    """The prompt source: the RLVR dataset of ``data.path`` when given, else the generated task
    of ``task`` (only the settings that task uses), seeded.

    Args:
        task: the ``task:`` section (name and the generated task's settings).
        data: the ``data:`` section; a non-empty ``data.path`` selects the dataset.
        seed: the seed of the problem streams (and of the dataset's shuffles); default 0.

    Returns:
        A ``tasks.MathDataset`` of ``data.path``, else the generated task
        (``tasks.make_task``) named by ``task.name``.
    """
    if data.path:
        return tasks.MathDataset(
            data.path,
            question_field=data.question_field,
            answer_field=data.answer_field,
            template=data.template,
            answer_format=data.answer_format,
            response_format=data.response_format,
            verifier=data.verifier,
            seed=seed,
            eval_path=data.eval_path or None,
            eval_fraction=data.eval_fraction,
            eval_size=data.eval_size or None,
        )
    settings = {
        "addition": {"digits": task.digits},
        "sorting": {"length": task.length},
        "countdown": {"count": task.count, "max_number": task.max_number},
    }[task.name]
    return tasks.make_task(task.name, format_coef=task.format_coef, seed=seed, **settings)


def _layout(source, codec, rollout: RolloutConfig, eval_prompts: int) -> Layout:
    if isinstance(source, tasks.MathDataset):  # every prompt of the file must fit
        if not rollout.max_new_tokens:
            raise ValueError("rollout.max_new_tokens must be set (> 0) for a dataset")
        probe = source.train_problems(0, len(source)) + source.eval_problems()
        new = rollout.max_new_tokens
    else:
        probe = source.train_problems(0, PROBE_PROBLEMS) + source.eval_problems(eval_prompts)
        new = rollout.max_new_tokens or source.max_answer_len() + 1
    return layout_for(codec, probe, new, rollout.max_prompt_tokens)


def _placement(mesh: Mesh):
    """``(name, shape) -> NamedSharding`` of a parameter by the default partition rules."""
    return lambda name, shape: NamedSharding(mesh, spec_for(name, shape, mesh, DEFAULT_RULES))


def _params(model) -> nnx.State:
    return nnx.split(model, nnx.Param, ...)[1]


def _chat_codec(tokenizer, source, config: ModelConfig, rollout: RolloutConfig) -> ChatCodec:
    return ChatCodec(
        tokenizer,
        source.question,
        config.chat_template,
        after_last_equals=isinstance(source, tasks.GeneratedTask),
        answer_marker=rollout.answer_marker,
    )


def build_policy(
    config: ModelConfig,
    source: Any,
    rollout: RolloutConfig,
    mesh: Mesh,
    eval_prompts: int = 0,
) -> Policy:
    """The policy of ``config`` for prompts from ``source`` (see the module docstring).

    Args:
        config: the ``model:`` section: ``source`` (``hf``, ``smollm2`` or a preset built from
            scratch with a character codec) and its settings.
        source: the prompt source (e.g. from :func:`make_source`); its problems size the
            layout, and its ``question`` formats the chat prompts of pretrained models.
        rollout: the ``rollout:`` section (response length, prompt bound, answer marker).
        mesh: the device mesh pretrained weights are placed on when read.
        eval_prompts: held-out prompts of a generated task included in the layout probe;
            default 0.

    Returns:
        The ``Policy``: model config, ``model_fn``, ``init_params`` (None for a model built
        from scratch), codec and layout. No weights are read yet.

    Raises:
        ValueError: for a dataset without ``rollout.max_new_tokens`` or an hf model without
            ``model.path``.
        FileNotFoundError: when the hf checkpoint's ``config.json`` is missing.
    """
    place = _placement(mesh)
    if config.source == "hf":
        if not config.path:
            raise ValueError("model.source=hf needs model.path (a Hugging Face checkpoint dir)")
        path = Path(config.path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"model.path: {config_file} not found")
        overrides = {"param_dtype": config.param_dtype}
        llama = config_from_hf(json.loads(config_file.read_text()), str(config_file), **overrides)
        codec = _chat_codec(tokenizer_from_hf(path), source, config, rollout)

        def init_params():
            return _params(load_hf(path, sharding=place, **overrides))

        return Policy(
            llama,
            lambda rngs: Llama(llama, rngs=rngs),
            init_params,
            codec,
            _layout(source, codec, rollout, eval_prompts),
        )
    if config.source == "smollm2":
        path = Path(config.gguf_path) if config.gguf_path else smollm2_gguf_path()
        llama = config_from_gguf(open_gguf(path), str(path))
        codec = _chat_codec(tokenizer_from_gguf(path), source, config, rollout)
        return Policy(
            llama,
            lambda rngs: Llama(llama, rngs=rngs),
            lambda: _params(load_gguf(path, sharding=place)),
            codec,
            _layout(source, codec, rollout, eval_prompts),
        )
    codec = CharCodec(rollout.answer_marker)
    layout = _layout(source, codec, rollout, eval_prompts)
    llama = get_preset(
        config.preset,
        vocab_size=codec.vocab_size,
        dim=config.dim,
        num_layers=config.layers,
        num_heads=config.heads,
        num_kv_heads=config.kv_heads,
        ffn_dim=config.ffn_dim,
        init_std=config.init_std,
        max_seq_len=layout.total,
    )
    return Policy(llama, lambda rngs: Llama(llama, rngs=rngs), None, codec, layout)
