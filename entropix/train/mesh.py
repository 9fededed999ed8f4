"""Device mesh with axes (data, fsdp, tensor), partition rules, and batch placement.

* ``make_mesh(data, fsdp, tensor)``: a ``jax.sharding.Mesh`` over all devices of all processes
  (``-1`` for one axis = whatever the others leave). The same call works on 1 CPU, 8 simulated
  CPU devices, a multi-GPU host or a TPU pod slice.
* Partition rules: ``[(regex, PartitionSpec), ...]``. A leaf's path is its keys joined with
  "/" (e.g. ``params/layers/0/attn/q_proj/kernel/value``, and the same tail under
  ``opt_state/...`` for Adam moments). The first rule whose regex ``re.search``-es the path and
  whose spec has the leaf's rank applies; a mesh axis that does not divide its dimension is
  dropped for that dimension (replicated instead); no rule: replicated.
* Batches: the leading axis of every batch leaf is sharded over ``("data", "fsdp")``; scalars
  are replicated. ``shard_batch`` builds global arrays from each process's local rows.
"""

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

Rules = Sequence[tuple[str, P]]

# Llama decoder (entropix.models.llama): Megatron-style tensor parallelism (column-parallel
# q/k/v/gate/up, row-parallel o/down, vocab-parallel embedding) plus FSDP on the other dim.
LLAMA_RULES: tuple[tuple[str, P], ...] = (
    (r"embed/embedding", P("tensor", "fsdp")),
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel", P("fsdp", "tensor")),
    (r"(o_proj|down_proj)/kernel", P("tensor", "fsdp")),
    (r"lm_head/kernel", P("fsdp", "tensor")),
    # biases follow their kernel's output dim: column-parallel ones split over "tensor";
    # o/down biases (output dim = model dim) and q/k norm scales are replicated (no rule).
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/bias", P("tensor")),
)
# Any other model: 2-D kernels FSDP x tensor, embeddings vocab x FSDP, the rest replicated.
DEFAULT_RULES: tuple[tuple[str, P], ...] = LLAMA_RULES + (
    (r"kernel", P("fsdp", "tensor")),
    (r"embedding", P("tensor", "fsdp")),
)


def make_mesh(
    data: int = -1,
    fsdp: int = 1,
    tensor: int = 1,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A mesh with axes (data, fsdp, tensor); one size may be -1 (fill the remaining devices).

    Args:
        data: size of the ``data`` axis, or -1; default -1.
        fsdp: size of the ``fsdp`` axis, or -1; default 1.
        tensor: size of the ``tensor`` axis, or -1; default 1.
        devices: the devices to lay out; default ``jax.devices()`` (every process's). The
            product of the sizes must equal their number.

    Returns:
        A ``jax.sharding.Mesh`` with axes :data:`AXES` of type Auto.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes must be positive, with at most one -1; got {sizes}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not split into mesh {sizes}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh (data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]}) needs "
            f"{math.prod(sizes)} devices; {len(devices)} available "
            "(pass devices=... to use a subset, or -1 for one axis)"
        )
    auto = (AxisType.Auto,) * len(AXES)  # shardings propagate through the program (GSPMD)
    if devices == list(jax.devices()):
        return jax.make_mesh(tuple(sizes), AXES, axis_types=auto, devices=devices)
    return Mesh(np.asarray(devices, dtype=object).reshape(sizes), AXES, axis_types=auto)


def path_name(path: Sequence[Any]) -> str:
    """Keys of a pytree path joined with "/" (dict keys, attribute names, sequence indices).

    Args:
        path: a pytree key path, as from ``jax.tree_util.tree_flatten_with_path``.

    Returns:
        The keys joined with "/" (e.g. ``params/layers/0/attn/q_proj/kernel``).
    """
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def spec_for(name: str, shape: Sequence[int], mesh: Mesh, rules: Rules) -> P:
    """The PartitionSpec the first matching rule gives a leaf ``name`` of ``shape``.

    Args:
        name: the leaf's path name (:func:`path_name`).
        shape: the leaf's shape.
        mesh: the mesh whose axis sizes decide which splits divide.
        rules: ``[(regex, PartitionSpec), ...]`` (module docstring).

    Returns:
        The spec, with axes that do not divide their dimension dropped; ``P()`` (replicated)
        when no rule applies.
    """
    for pattern, spec in rules:
        if len(spec) != len(shape) or not re.search(pattern, name):
            continue
        dims = []
        for axes, size in zip(spec, shape, strict=True):
            group = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
            split = math.prod(mesh.shape[a] for a in group)
            dims.append(axes if group and size % split == 0 else None)
        return P(*dims)
    return P()


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules, prefix: str = "") -> Any:
    """A pytree of NamedShardings like ``tree`` (arrays or ShapeDtypeStructs) by ``rules``.

    Args:
        tree: a pytree of arrays or ShapeDtypeStructs.
        mesh: the mesh the shardings live on.
        rules: ``[(regex, PartitionSpec), ...]``.
        prefix: prepended with "/" to each leaf's path before matching; default none.

    Returns:
        A pytree of ``NamedSharding`` with the structure of ``tree``.
    """

    def one(path, leaf):
        name = f"{prefix}/{path_name(path)}" if prefix else path_name(path)
        return NamedSharding(mesh, spec_for(name, np.shape(leaf), mesh, rules))

    return jax.tree_util.tree_map_with_path(one, tree)


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Shardings for a TrainState (abstract or concrete); paths start with the field name.

    Args:
        abstract_state: a TrainState of arrays or ShapeDtypeStructs.
        mesh: the mesh the shardings live on.
        rules: partition rules; default :data:`DEFAULT_RULES`.

    Returns:
        A pytree of ``NamedSharding`` with the structure of ``abstract_state``.
    """
    return tree_shardings(abstract_state, mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
    """The fully replicated sharding on ``mesh``.

    Args:
        mesh: the mesh.

    Returns:
        ``NamedSharding(mesh, P())``.
    """
    return NamedSharding(mesh, P())


def batch_spec(ndim: int) -> P:
    """The spec of a batch leaf: leading axis over :data:`BATCH_AXES`, scalars replicated.

    Args:
        ndim: the leaf's rank.

    Returns:
        ``P(("data", "fsdp"))`` for ndim >= 1, else ``P()``.
    """
    return P(BATCH_AXES) if ndim else P()


def shard_batch(local_batch: Any, mesh: Mesh) -> Any:
    """Global arrays from this process's rows: leading axis over (data, fsdp), scalars replicated.

    Args:
        local_batch: a pytree of arrays ``[batch, ...]``. Numpy leaves are this process's rows:
            on one process the whole batch, on N processes each passes its contiguous block
            (process i: rows [i*B/N, (i+1)*B/N)). ``jax.Array`` leaves (e.g. rollouts already
            on the mesh) are global arrays and are only resharded. The global batch must
            divide by data * fsdp.
        mesh: the mesh.

    Returns:
        The pytree of global ``jax.Array``s with :func:`batch_spec` shardings.
    """
    split = mesh.shape["data"] * mesh.shape["fsdp"]

    def one(path, x):
        if isinstance(x, jax.Array):
            if x.ndim and x.shape[0] % split:
                raise ValueError(
                    f"batch leaf {path_name(path) or 'batch'} has {x.shape[0]} rows; "
                    f"the global batch must divide by data*fsdp = {split}"
                )
            return jax.device_put(x, NamedSharding(mesh, batch_spec(x.ndim)))
        x = np.asarray(x)
        if x.ndim and (x.shape[0] * jax.process_count()) % split:
            raise ValueError(
                f"batch leaf {path_name(path) or 'batch'} has {x.shape[0]} rows per process; "
                f"the global batch must divide by data*fsdp = {split}"
            )
        sharding = NamedSharding(mesh, batch_spec(x.ndim))
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map_with_path(one, local_batch)
