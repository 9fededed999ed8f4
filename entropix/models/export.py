"""Write a ``Llama`` back as a Hugging Face checkpoint directory that transformers loads.

``save_pretrained(model, directory, tokenizer=None, dtype=None, max_shard_bytes=5 GiB)``
writes ``config.json`` (``hf_config.config_to_hf``: the family whose maths equals the config,
transformers v5 field names), the weights as safetensors (one ``model.safetensors``, or
``model-0000i-of-0000N.safetensors`` shards + ``model.safetensors.index.json`` when they exceed
``max_shard_bytes``) and, with ``tokenizer``, the tokenizer files: a directory (or a
``Tokenizer`` read from one) is copied file by file; a ``Tokenizer`` from GGUF is written as
``tokenizer.json`` + ``tokenizer_config.json`` + ``chat_template.jinja``.

Kernels [in, out] are written as HF weights [out, in]; a sigmaReparam layer is written as its
effective weight gamma / sigma * W (the function it computes), so the export is a plain model.
Tensors are gathered to the host and written one at a time (``dtype`` default: the model's
``param_dtype``); a tied unembedding is not written (transformers ties it again).
"""

import json
import shutil
from pathlib import Path

import jax
import numpy as np

from entropix.models.hf_config import ModelFileError, config_to_hf, owner, tensor_names
from entropix.models.llama import Llama
from entropix.models.safetensors_io import INDEX_FILE, SafetensorsWriter
from entropix.models.sigma_reparam import SigmaReparamLinear
from entropix.models.tokenizer import CHAT_TEMPLATE_FILE, Tokenizer

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", CHAT_TEMPLATE_FILE, "special_tokens_map.json",
    "added_tokens.json", "generation_config.json",
)  # fmt: skip


def _host(value, name: str) -> np.ndarray:
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        raise ModelFileError(
            f"{name} is sharded over devices of other processes; gather it first "
            "(e.g. jax.experimental.multihost_utils.process_allgather) and export on one process"
        )
    return np.asarray(jax.device_get(value))


def _tensor(model: Llama, name) -> np.ndarray:
    """The HF-layout host array of one parameter (effective weight for sigmaReparam)."""
    module = owner(model, name)
    if isinstance(module, SigmaReparamLinear) and name.path[-1] == "kernel":
        value = module.effective_kernel(update=False)
    else:
        value = getattr(module, name.path[-1]).get_value()
    array = _host(value, name.hf)
    return array.T if name.kernel else array


def _write_tokenizer(tokenizer, directory: Path) -> dict:
    """Tokenizer files into ``directory``; returns the config.json token ids it knows."""
    source = tokenizer.source if isinstance(tokenizer, Tokenizer) else Path(tokenizer)
    if source is not None:
        source = Path(source)
        if not (source / "tokenizer.json").exists():
            raise ModelFileError(f"{source}: tokenizer.json not found")
        for file in TOKENIZER_FILES:
            if (source / file).exists():
                shutil.copyfile(source / file, directory / file)
        if not isinstance(tokenizer, Tokenizer):
            from entropix.models.tokenizer import tokenizer_from_hf

            tokenizer = tokenizer_from_hf(source)
    else:
        tokenizer.backend.save(str(directory / "tokenizer.json"))
        token = tokenizer.backend.id_to_token
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
        }
        for key, index in (
            ("bos", tokenizer.bos_id),
            ("eos", tokenizer.eos_id),
            ("pad", tokenizer.pad_id),
        ):
            if index is not None:
                config[f"{key}_token"] = token(index)
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if tokenizer.chat_template:
            (directory / CHAT_TEMPLATE_FILE).write_text(tokenizer.chat_template)
    ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
    ids["pad_token_id"] = tokenizer.pad_id
    return {k: v for k, v in ids.items() if v is not None}


def save_pretrained(
    model: Llama,
    directory: str | Path,
    *,
    tokenizer: "Tokenizer | str | Path | None" = None,
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Write ``model`` (+ ``tokenizer``) as a transformers checkpoint directory; returns it.

    ``dtype`` ("float32", "bfloat16", "float16"; default the model's ``param_dtype``) is the
    storage dtype of the safetensors. Raises ``ModelFileError`` when no transformers family
    computes the model's config (e.g. q/k/v bias with q/k norm but no o bias).

    Args:
        model: the decoder to export (its parameters must be addressable from this process).
        directory: where to write; created (with parents) if missing, files overwritten.
        tokenizer: a tokenizer directory, or a :class:`Tokenizer`, whose files are written
            too and whose bos/eos/pad ids go into ``config.json``; None for weights only.
        dtype: storage dtype name of the safetensors ("float32", "bfloat16", "float16");
            None for the model's ``param_dtype``.
        max_shard_bytes: largest safetensors file before the weights are split into shards;
            default 5 GiB.

    Returns:
        ``directory`` as a ``Path``.
    """
    config = model.config
    dtype = np.dtype(jax.numpy.dtype(dtype or config.param_dtype))
    hf = config_to_hf(config, dtype=dtype.name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        hf.update(_write_tokenizer(tokenizer, directory))
    names = tensor_names(config)
    shards, size = [[]], 0
    for name in names:
        variable = getattr(owner(model, name), name.path[-1])
        nbytes = int(np.prod(variable.get_value().shape)) * dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    count = len(shards)
    files = (
        ["model.safetensors"]
        if count == 1
        else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
    )
    weight_map, total = {}, 0
    for file, shard in zip(files, shards, strict=True):
        writer = SafetensorsWriter(directory / file)
        for name in shard:
            shape = getattr(owner(model, name), name.path[-1]).get_value().shape
            writer.add(name.hf, shape[::-1] if name.kernel else shape, dtype)
        for name in shard:
            array = _tensor(model, name).astype(dtype)
            writer.write(name.hf, array)
            weight_map[name.hf] = file
            total += array.nbytes
        writer.close()
    if count > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    return directory
