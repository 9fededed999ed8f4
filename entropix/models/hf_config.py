"""Hugging Face ``config.json`` <-> ``LlamaConfig``, and the checkpoint tensor names per family.

Families (``model_type``) and what they switch on in the one decoder (``llama.py``):

| model_type | q/k/v bias | o bias | q/k norm | head_dim | sliding window |
|---|---|---|---|---|---|
| llama (Llama 1-3, SmolLM2) | ``attention_bias`` | ``attention_bias`` | no | ``head_dim`` | no |
| mistral | no | no | no | ``head_dim`` | ``sliding_window`` |
| qwen2 (Qwen2, Qwen2.5) | yes | no | no | dim / heads | ``use_sliding_window`` |
| qwen3 | ``attention_bias`` | ``attention_bias`` | yes | ``head_dim`` | ``use_sliding_window`` |

``mlp_bias`` (llama) adds biases to the SwiGLU projections. RoPE comes from ``rope_parameters``
(transformers v5) or ``rope_scaling`` + ``rope_theta`` (v4): rope types "default", "linear" and
"llama3" are implemented. Qwen's per-layer sliding window (``max_window_layers`` /
``layer_types``) is implemented when it covers every layer or none.

Every key of ``config.json`` is either read, or known not to change the function the model
computes (token ids, dtype, cache and output switches, generation defaults, ...); any other key,
and any value of a read key that is not implemented, is refused with a ``ModelFileError``
naming the key and the value. Nothing that changes the maths is silently ignored.
"""

import dataclasses
from typing import Any

from flax import nnx

from entropix.models.llama import Llama, LlamaConfig


class ModelFileError(ValueError):
    """A model file (weights, config or tokenizer) could not be loaded or written; the message
    names the file and the problem. (Training checkpoints raise
    ``entropix.train.CheckpointError``.)"""


FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}

_COMMON = frozenset(
    {
        "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
        "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "rope_theta",
        "rope_scaling", "rope_parameters", "attention_dropout", "partial_rotary_factor",
    }
)  # fmt: skip
_READ = {
    "llama": _COMMON | {"attention_bias", "mlp_bias", "rope_interleaved"},
    "mistral": _COMMON | {"sliding_window"},
    "qwen2": _COMMON
    | {"use_sliding_window", "sliding_window", "max_window_layers", "layer_types", "use_mrope"},
    "qwen3": _COMMON
    | {
        "attention_bias",
        "use_sliding_window",
        "sliding_window",
        "max_window_layers",
        "layer_types",
    },
}
# Keys that do not change the function: ids, dtype, cache/output switches, init, bookkeeping,
# generation defaults that transformers 4.x wrote into config.json, and pretraining_tp (a
# Megatron matmul split that computes the same product).
_INERT = frozenset(
    {
        "architectures", "transformers_version", "_name_or_path", "name_or_path", "torch_dtype",
        "dtype", "use_cache", "initializer_range", "bos_token_id", "eos_token_id",
        "pad_token_id", "sep_token_id", "decoder_start_token_id", "output_hidden_states",
        "output_attentions", "return_dict", "use_return_dict", "chunk_size_feed_forward",
        "is_encoder_decoder", "is_decoder", "add_cross_attention", "cross_attention_hidden_size",
        "tie_encoder_decoder", "problem_type", "id2label", "label2id", "num_labels",
        "tokenizer_class", "prefix", "finetuning_task", "task_specific_params", "torchscript",
        "use_bfloat16", "tf_legacy_loss", "pruned_heads", "is_llama_config", "pretraining_tp",
        "_attn_implementation_autoset", "attn_implementation", "max_length", "min_length",
        "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty",
        "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
        "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
        "num_return_sequences", "output_scores", "return_dict_in_generate",
        "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
        "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    }
)  # fmt: skip
_ROPE_KEYS = {
    "default": {"rope_type", "type", "rope_theta", "partial_rotary_factor"},
    "linear": {"rope_type", "type", "rope_theta", "partial_rotary_factor", "factor"},
    "llama3": {
        "rope_type", "type", "rope_theta", "partial_rotary_factor", "factor", "low_freq_factor",
        "high_freq_factor", "original_max_position_embeddings",
    },
}  # fmt: skip


def _refuse(source: str, key: str, value, why: str = "is not implemented"):
    raise ModelFileError(f"{source}: {key}={value!r} {why}")


def _rope_fields(hf: dict, source: str) -> dict:
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    name = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
    if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
        _refuse(source, name, params, "(per-layer-type RoPE) is not implemented")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in _ROPE_KEYS:
        _refuse(source, f"{name}.rope_type", rope_type, f"is not implemented ({tuple(_ROPE_KEYS)})")
    for key in params:
        if key not in _ROPE_KEYS[rope_type]:
            _refuse(source, f"{name}.{key}", params[key], f"is not implemented for {rope_type}")
    for key, where in (("partial_rotary_factor", params), ("partial_rotary_factor", hf)):
        if float(where.get(key, 1.0)) != 1.0:
            _refuse(source, key, where[key], "(partial RoPE) is not implemented")
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    fields = dict(rope_theta=float(theta), rope_type=rope_type)
    if rope_type != "default":
        fields["rope_factor"] = float(params["factor"])
    if rope_type == "llama3":
        fields.update(
            rope_low_freq_factor=float(params["low_freq_factor"]),
            rope_high_freq_factor=float(params["high_freq_factor"]),
            rope_original_max_len=int(
                params.get("original_max_position_embeddings", hf.get("max_position_embeddings"))
            ),
        )
    return fields


def _qwen_window(hf: dict, source: str) -> int | None:
    """The window every layer uses (None: none does); a window on some layers is refused."""
    window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
    layers = hf["num_hidden_layers"]
    types = hf.get("layer_types")
    if types is None:
        first = hf.get("max_window_layers", 0)
        types = ["sliding_attention" if i >= first else "full_attention" for i in range(layers)]
    for kind in types:
        if kind not in ("full_attention", "sliding_attention"):
            _refuse(source, "layer_types", types)
    if window is None or "sliding_attention" not in types:
        return None
    if "full_attention" in types:
        _refuse(
            source,
            "layer_types",
            types,
            "(a sliding window on some layers only) is not implemented",
        )
    return int(window)


def config_from_hf(hf: dict, source: str = "config.json", **overrides: Any) -> LlamaConfig:
    """``LlamaConfig`` from a Hugging Face ``config.json`` dict (llama, mistral, qwen2, qwen3).

    ``overrides`` replace config fields (e.g. ``dtype="bfloat16"``). Raises ``ModelFileError``
    naming the key and value of anything that would change the maths and is not implemented.

    Args:
        hf: the parsed ``config.json`` (transformers v4 or v5 field names).
        source: what to call the file in error messages; default "config.json".
        **overrides: ``LlamaConfig`` fields to replace, by name.

    Returns:
        The decoder config computing the same function as the checkpoint's architecture.
    """
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise ModelFileError(
            f"{source}: model_type {model_type!r} is not a Llama-family decoder "
            f"(supported: {', '.join(FAMILIES)})"
        )
    for key in hf:
        if key not in _READ[model_type] and key not in _INERT:
            _refuse(source, key, hf[key], f"is not implemented for model_type {model_type!r}")
    if hf.get("hidden_act", "silu") != "silu":
        _refuse(source, "hidden_act", hf["hidden_act"], "is not implemented (only 'silu')")
    if float(hf.get("attention_dropout") or 0.0) != 0.0:
        _refuse(
            source, "attention_dropout", hf["attention_dropout"], "(dropout) is not implemented"
        )
    if hf.get("use_mrope"):
        _refuse(source, "use_mrope", hf["use_mrope"], "(multimodal RoPE) is not implemented")
    if hf.get("rope_interleaved"):
        _refuse(
            source,
            "rope_interleaved",
            hf["rope_interleaved"],
            "(interleaved RoPE) is not implemented",
        )
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    bias = bool(hf.get("attention_bias", False))
    qkv_bias, o_bias = {"qwen2": (True, False), "mistral": (False, False)}.get(
        model_type, (bias, bias)
    )
    if model_type == "mistral":
        window = hf.get("sliding_window")
    elif model_type in ("qwen2", "qwen3"):
        window = _qwen_window(hf, source)
    else:
        window = None
    fields = dict(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        ffn_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        explicit_head_dim=None if head_dim * heads == hf["hidden_size"] else int(head_dim),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        qk_norm=model_type == "qwen3",
        sliding_window=None if window is None else int(window),
        **_rope_fields(hf, source),
    )
    try:
        return LlamaConfig(**{**fields, **overrides})
    except ValueError as error:
        raise ModelFileError(f"{source}: {error}") from error


def hf_model_type(config: LlamaConfig) -> str:
    """The transformers family that computes exactly ``config`` (``ModelFileError`` if none).

    Args:
        config: the decoder config to match.

    Returns:
        The ``model_type``: one of :data:`FAMILIES` ("llama", "mistral", "qwen2", "qwen3").
    """
    c = config
    if c.rope_freq_factors is not None:
        raise ModelFileError(
            "rope_freq_factors (a GGUF rope_freqs tensor) has no Hugging Face config equivalent"
        )
    if c.qk_norm and c.qkv_bias == c.o_bias and not c.mlp_bias:
        return "qwen3"
    if not c.qk_norm and c.qkv_bias and not c.o_bias and not c.mlp_bias:
        return "qwen2"
    if (
        not c.qk_norm
        and c.sliding_window is not None
        and not (c.qkv_bias or c.o_bias or c.mlp_bias)
    ):
        return "mistral"
    if not c.qk_norm and c.sliding_window is None and c.qkv_bias == c.o_bias:
        return "llama"
    raise ModelFileError(
        f"no Hugging Face family has qkv_bias={c.qkv_bias}, o_bias={c.o_bias}, "
        f"mlp_bias={c.mlp_bias}, qk_norm={c.qk_norm}, sliding_window={c.sliding_window}"
    )


def config_to_hf(config: LlamaConfig, dtype: str | None = None) -> dict:
    """A transformers (v5 field names) ``config.json`` dict computing the same function.

    Args:
        config: the decoder config to describe (``ModelFileError`` if no family computes it).
        dtype: the ``"dtype"`` entry (storage dtype name); None for ``config.param_dtype``.

    Returns:
        A JSON-ready dict: ``architectures``, ``model_type``, sizes, ``rope_parameters`` and
        the family's bias / head_dim / sliding-window keys.
    """
    c = config
    model_type = hf_model_type(c)
    rope = {"rope_type": c.rope_type, "rope_theta": c.rope_theta}
    if c.rope_type != "default":
        rope["factor"] = c.rope_factor
    if c.rope_type == "llama3":
        rope.update(
            low_freq_factor=c.rope_low_freq_factor,
            high_freq_factor=c.rope_high_freq_factor,
            original_max_position_embeddings=c.rope_original_max_len,
        )
    hf = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.dim,
        "intermediate_size": c.ffn_dim,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_seq_len,
        "rms_norm_eps": c.rms_eps,
        "tie_word_embeddings": c.tie_embeddings,
        "rope_parameters": rope,
        "attention_dropout": 0.0,
        "dtype": dtype or c.param_dtype,
    }
    if model_type != "qwen2":
        hf["head_dim"] = c.head_dim
    if model_type in ("llama", "qwen3"):
        hf["attention_bias"] = c.qkv_bias
    if model_type == "llama":
        hf["mlp_bias"] = c.mlp_bias
    if model_type == "mistral":
        hf["sliding_window"] = c.sliding_window
    if model_type in ("qwen2", "qwen3"):
        sliding = c.sliding_window is not None
        hf.update(
            use_sliding_window=sliding,
            sliding_window=c.sliding_window,
            max_window_layers=0 if sliding else c.num_layers,
            layer_types=[("sliding" if sliding else "full") + "_attention"] * c.num_layers,
        )
    return hf


@dataclasses.dataclass(frozen=True)
class TensorName:
    """One parameter: module path in ``Llama``, HF and GGUF tensor names, linear kernel or not.

    Linear kernels are stored [in, out] in the model and [out, in] in both file formats.
    """

    path: tuple
    hf: str
    gguf: str
    kernel: bool


_ATTN = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}
_MLP = {"gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def owner(model: Llama, name: TensorName) -> nnx.Module:
    """The module of ``model`` that holds parameter ``name`` (its attribute ``name.path[-1]``).

    Args:
        model: the decoder holding the parameter.
        name: the parameter, as listed by :func:`tensor_names` for ``model.config``.

    Returns:
        The submodule reached by ``name.path[:-1]`` (e.g. ``model.layers[3].attn.q_proj``).
    """
    module = model
    for part in name.path[:-1]:
        module = module[part] if isinstance(part, int) else getattr(module, part)
    return module


def _layer_names(c: LlamaConfig, i: int, add) -> None:
    """``add(path, hf, gguf, kernel=False)`` for every parameter of decoder block ``i``."""
    hf, gg, at = f"model.layers.{i}.", f"blk.{i}.", ("layers", i)

    def linear(block, hf_block, module, short, bias):
        stem, gstem = f"{hf}{hf_block}.{module}", f"{gg}{short}"
        add((*at, block, module, "kernel"), stem + ".weight", gstem + ".weight", True)
        if bias:
            add((*at, block, module, "bias"), stem + ".bias", gstem + ".bias")

    add((*at, "attn_norm", "weight"), hf + "input_layernorm.weight", gg + "attn_norm.weight")
    for module, short in _ATTN.items():
        linear("attn", "self_attn", module, short, c.o_bias if module == "o_proj" else c.qkv_bias)
    for norm in ("q_norm", "k_norm") if c.qk_norm else ():
        add(
            (*at, "attn", norm, "weight"), f"{hf}self_attn.{norm}.weight", f"{gg}attn_{norm}.weight"
        )
    add((*at, "mlp_norm", "weight"), hf + "post_attention_layernorm.weight", gg + "ffn_norm.weight")
    for module, short in _MLP.items():
        linear("mlp", "mlp", module, short, c.mlp_bias)


def tensor_names(config: LlamaConfig) -> list[TensorName]:
    """Every parameter of a ``Llama(config)`` with its HF and GGUF names, in file order.

    Args:
        config: the decoder config (its biases, q/k norms and tied embedding decide the list).

    Returns:
        One :class:`TensorName` per parameter: embedding, then each block's, then the final
        norm and (untied only) the output head.
    """
    names = []

    def add(path, hf, gguf, kernel=False):
        names.append(TensorName(tuple(path), hf, gguf, kernel))

    add(("embed", "embedding"), "model.embed_tokens.weight", "token_embd.weight")
    for i in range(config.num_layers):
        _layer_names(config, i, add)
    add(("norm", "weight"), "model.norm.weight", "output_norm.weight")
    if not config.tie_embeddings:
        add(("lm_head", "kernel"), "lm_head.weight", "output.weight", True)
    return names
