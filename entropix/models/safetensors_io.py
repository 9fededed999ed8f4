"""Safetensors files read one tensor (or one slice of it) at a time, and written one at a time.

The format (https://huggingface.co/docs/safetensors): an unsigned little-endian 64-bit header
size N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {...}}`` padded with spaces, then the data buffer (row-major, little-endian;
offsets relative to the buffer). A sharded checkpoint adds ``model.safetensors.index.json``
with ``{"weight_map": {name: file}}``.

``SafetensorsDirectory.read(name, index)`` memory-maps only the tensor's bytes and copies the
requested block, so a slice of a tensor costs the slice, not the tensor, and nothing stays
mapped afterwards. The library's own ``safe_open`` is not used for reading because its numpy
framework cannot hold bf16 and its flax framework materialises every tensor on JAX's default
device (an accelerator on a GPU host) before it could be placed on a mesh.
"""

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import ml_dtypes
import numpy as np
from numpy.typing import DTypeLike

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
INDEX_FILE = "model.safetensors.index.json"


def read_header(path: str | Path) -> tuple[dict, int]:
    """(header dict without ``__metadata__``, byte offset of the data buffer) of one file.

    Args:
        path: a ``.safetensors`` file (``ValueError`` if it is not one).

    Returns:
        ``(header, start)``: ``{name: {"dtype", "shape", "data_offsets"}}`` and the absolute
        byte offset where the data buffer begins (8 + header size).
    """
    path = Path(path)
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(handle.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a safetensors file ({error})") from error
    header.pop("__metadata__", None)
    return header, 8 + size


class SafetensorsDirectory:
    """The tensors of a checkpoint directory: one ``*.safetensors`` file, several, or an index."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = self.directory / INDEX_FILE
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.directory.glob("*.safetensors"))
        self.files = [self.directory / f for f in files]
        self.entries: dict[str, tuple[Path, dict, int]] = {}
        for file in self.files:
            if not file.exists():
                raise FileNotFoundError(f"{file}: listed in {INDEX_FILE} but missing")
            header, start = read_header(file)
            for name, entry in header.items():
                self.entries[name] = (file, entry, start)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        """Every tensor name in the directory's files.

        Returns:
            The names in file order (files sorted by name).
        """
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of tensor ``name``.

        Args:
            name: a tensor name (``KeyError`` if absent).

        Returns:
            The shape as in the file (HF linear weights are [out, in]).
        """
        return tuple(self.entries[name][1]["shape"])

    def dtype(self, name: str) -> np.dtype:
        """The numpy dtype of tensor ``name`` (``ValueError`` for a dtype not in ``DTYPES``).

        Args:
            name: a tensor name (``KeyError`` if absent).

        Returns:
            The dtype (bf16 and fp8 via ``ml_dtypes``).
        """
        kind = self.entries[name][1]["dtype"]
        if kind not in DTYPES:
            raise ValueError(f"{self.entries[name][0]}: tensor {name!r} has dtype {kind}")
        return DTYPES[kind]

    def read(self, name: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        """A copy of ``tensor[index]`` (``index``: a tuple of slices; None = everything).

        Args:
            name: a tensor name (``KeyError`` if absent).
            index: one slice per axis of the stored tensor; None for the whole tensor.

        Returns:
            A fresh host array of the file's dtype (not a view of the file).
        """
        file, entry, start = self.entries[name]
        shape, dtype = self.shape(name), self.dtype(name)
        begin, end = entry["data_offsets"]
        if end - begin != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{file}: tensor {name!r} has {end - begin} bytes for {shape}")
        if end == begin:
            return np.zeros(shape, dtype)[index or ()]
        if index is None or all(s == slice(None) for s in index):
            # whole tensor: read straight into a fresh buffer (no file pages stay mapped)
            block = np.empty(shape, dtype)
            with file.open("rb") as handle:
                handle.seek(start + begin)
                if handle.readinto(block.reshape(-1).view(np.uint8)) != end - begin:
                    raise ValueError(f"{file}: tensor {name!r} is truncated")
            return block
        mapped = np.memmap(file, dtype=dtype, mode="r", offset=start + begin, shape=shape)
        block = np.array(mapped[index or ()])  # copies the block; the mapping is dropped here
        del mapped
        return block


class SafetensorsWriter:
    """Writes one safetensors file tensor by tensor: ``add(name, shape, dtype)`` for each, then
    ``write(name, array)`` in the same order (the header needs every shape up front)."""

    def __init__(self, path: str | Path, metadata: dict | None = None):
        self.path = Path(path)
        self.metadata = {"format": "pt", **(metadata or {})}
        self.header: dict[str, dict] = {}
        self.size = 0
        self.handle = None
        self.pending: list[str] = []

    def add(self, name: str, shape: Sequence[int], dtype: DTypeLike) -> None:
        """Declare the next tensor (before any ``write``).

        Args:
            name: the tensor name in the header.
            shape: its shape as stored.
            dtype: its numpy dtype; must be one of ``DTYPES``' values.
        """
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        entry = {"dtype": _NAMES[dtype], "shape": [int(s) for s in shape]}
        self.header[name] = {**entry, "data_offsets": [self.size, self.size + nbytes]}
        self.size += nbytes
        self.pending.append(name)

    def _open(self) -> None:
        """Create the file and write the header (padded to 8 bytes, as the format asks)."""
        text = json.dumps({"__metadata__": self.metadata, **self.header}).encode()
        text += b" " * (-len(text) % 8)
        self.handle = self.path.open("wb")
        self.handle.write(struct.pack("<Q", len(text)) + text)

    def write(self, name: str, array: np.ndarray) -> None:
        """Append the data of the next declared tensor (the first ``write`` writes the header).

        Args:
            name: the tensor, in the order of the ``add`` calls (``ValueError`` otherwise).
            array: its values, of the declared shape (cast to the declared dtype).
        """
        if self.handle is None:
            self._open()
        if not self.pending or self.pending[0] != name:
            raise ValueError(f"write {name!r} out of order (expected {self.pending[:1]})")
        entry = self.header[name]
        array = np.ascontiguousarray(array, DTYPES[entry["dtype"]])
        if list(array.shape) != entry["shape"]:
            raise ValueError(f"{name}: shape {array.shape} != declared {entry['shape']}")
        self.handle.write(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        self.pending.pop(0)

    def close(self) -> None:
        """Finish the file (``ValueError`` if a declared tensor was never written)."""
        if self.pending:
            raise ValueError(f"{self.path}: tensors never written: {self.pending[:4]}")
        if self.handle is None:
            self._open()
        self.handle.close()
