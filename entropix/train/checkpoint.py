"""Checkpoints with orbax ``CheckpointManager``: periodic async saves, exact resume, fallback.

Layout: ``<directory>/<step>/state`` (every array leaf of the saved pytree, one entry per leaf,
named by its pytree path; for a TrainState: params, model state, optimizer state, controller
states, RNG, step, data position, guard counters) and ``<directory>/<step>/meta`` (JSON:
format, step, ``data_position`` when the pytree has one, and a uint32 fingerprint per leaf).
Orbax writes each step into a temporary directory and renames it when complete, so a process
killed mid-save leaves no half-written step behind.

Restore walks the steps newest first. A step that fails to load (missing or truncated files),
whose leaves do not match the expected state, or whose restored arrays do not reproduce the
saved fingerprints is reported (stderr and :attr:`Checkpointer.problems`), moved to
``<directory>/corrupt/<step>-<unix time>`` and the previous step is tried. Restoring takes
the target shardings from the abstract state, so a run saved on one mesh resumes on another.
"""

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from entropix.train.mesh import path_name

FORMAT = 1


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def flatten_state(state: Any) -> dict[str, jax.Array]:
    """{path: array} for every array leaf (typed PRNG keys stored as their uint32 data).

    Args:
        state: a pytree of arrays (e.g. a TrainState).

    Returns:
        dict from each leaf's "/"-joined pytree path to the leaf (key data for PRNG keys).
    """
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        flat[path_name(path)] = jax.random.key_data(leaf) if _is_key(leaf) else leaf
    return flat


def _words(x) -> jax.Array:
    """The bit pattern of ``x`` as uint32 words (1- and 2-byte items zero-extended)."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    size = jnp.dtype(x.dtype).itemsize
    if size in (4, 8):
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    narrow = {1: jnp.uint8, 2: jnp.uint16}[size]
    return jax.lax.bitcast_convert_type(x, narrow).reshape(-1).astype(jnp.uint32)


@jax.jit
def _fingerprint_arrays(flat):
    def one(x):
        w = _words(x)
        weights = jnp.arange(w.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
        return jnp.sum(w * weights, dtype=jnp.uint32)  # arithmetic mod 2^32: order-independent

    return {k: one(v) for k, v in flat.items()}


def fingerprint(flat: dict[str, jax.Array]) -> dict[str, int]:
    """A position-weighted uint32 checksum of each leaf's bits (same on any sharding).

    Formula: sum_i w_i (i * 2654435761 + 1) mod 2^32 over the leaf's uint32 words w_i.

    Args:
        flat: {name: array} as from :func:`flatten_state`.

    Returns:
        {name: checksum} with Python ints in [0, 2^32).
    """
    return {k: int(v) for k, v in jax.device_get(_fingerprint_arrays(flat)).items()}


class CheckpointError(RuntimeError):
    """A checkpoint step that cannot be restored as the expected state."""


class Checkpointer:
    """Save a pytree (a TrainState, or any pytree of arrays) every ``every`` steps (keep the
    newest ``keep``); restore the newest intact one (see the module docstring)."""

    def __init__(
        self,
        directory,
        *,
        every: int = 100,
        keep: int = 3,
        async_save: bool = True,
        report: Callable[[str], None] | None = None,
    ):
        if every < 1 or keep < 1:
            raise ValueError(f"every and keep must be >= 1; got every={every}, keep={keep}")
        self.directory = Path(directory).absolute()
        self.every = every
        self.options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.report = report or (lambda message: print(message, file=sys.stderr, flush=True))
        self.problems: list[str] = []
        self._manager = ocp.CheckpointManager(self.directory, options=self.options)

    def steps(self) -> list[int]:
        """The saved steps, oldest first.

        Returns:
            Sorted list of step numbers on disk.
        """
        return sorted(self._manager.all_steps())

    def save(self, tree: Any, *, step: int | None = None, force: bool = False) -> bool:
        """Save ``tree`` as step ``step`` (default ``tree.step``, as on a TrainState) if the step
        is on the interval (or ``force``) and not saved yet.

        Asynchronous when enabled: the arrays are copied off the devices before this returns,
        the files are written in the background (``wait()`` blocks until they are).

        Args:
            tree: a pytree of arrays; a ``data_position`` attribute is stored in the metadata.
            step: the step number; default ``tree.step``.
            force: save even when ``step`` is not a multiple of ``every``; default False.

        Returns:
            Whether a save was started.
        """
        step = int(jax.device_get(tree.step if step is None else step))
        if not force and step % self.every:
            return False
        if step in self._manager.all_steps():
            return False
        flat = {k: v for k, v in flatten_state(tree).items() if v.size}  # orbax: no empty arrays
        meta = {"format": FORMAT, "step": step, "fingerprint": fingerprint(flat)}
        if hasattr(tree, "data_position"):
            meta["data_position"] = int(jax.device_get(tree.data_position))
        args = ocp.args.Composite(state=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave(meta))
        return bool(self._manager.save(step, args=args, force=True))

    def restore(self, abstract_state: Any, shardings: Any | None = None) -> Any | None:
        """The newest intact checkpoint as a pytree shaped like ``abstract_state``.

        Steps that fail to load or verify are quarantined (module docstring) and the previous
        one is tried.

        Args:
            abstract_state: the expected pytree, of arrays or ShapeDtypeStructs (static fields
                are taken from it).
            shardings: a pytree of shardings matching ``abstract_state``; default each leaf's
                own sharding, else device 0.

        Returns:
            The restored pytree, or None when no step can be restored.
        """
        leaves, treedef = jax.tree_util.tree_flatten(abstract_state)
        paths = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract_state)[0]]
        if shardings is None:
            default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            sharding_leaves = [getattr(x, "sharding", None) or default for x in leaves]
        else:
            sharding_leaves = treedef.flatten_up_to(shardings)
        target, empty = {}, {}
        for name, leaf, sharding in zip(paths, leaves, sharding_leaves, strict=True):
            shape, dtype = tuple(leaf.shape), leaf.dtype
            if _is_key(leaf):
                data = jax.eval_shape(jax.random.key_data, leaf)
                shape, dtype = tuple(data.shape), data.dtype
            if math.prod(shape):
                target[name] = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
            else:
                empty[name] = jax.device_put(np.zeros(shape, dtype), sharding)

        for step in reversed(self.steps()):
            try:
                flat = self._load(step, target)
            except Exception as error:  # any failure to read a step means: use an older one
                self._quarantine(step, error)
                continue
            flat.update(empty)
            values = []
            for name, leaf in zip(paths, leaves, strict=True):
                value = flat[name]
                if _is_key(leaf):
                    value = jax.random.wrap_key_data(value, dtype=leaf.dtype)
                values.append(value)
            return jax.tree_util.tree_unflatten(treedef, values)
        return None

    def _load(self, step: int, target: dict) -> dict:
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
        )
        restored = self._manager.restore(step, args=args)
        meta, flat = restored["meta"], dict(restored["state"])
        if meta.get("format") != FORMAT or meta.get("step") != step:
            raise CheckpointError(
                f"metadata {json.dumps(meta)[:200]} does not describe step {step}"
            )
        if set(flat) != set(target):
            missing, extra = sorted(set(target) - set(flat)), sorted(set(flat) - set(target))
            raise CheckpointError(f"leaves differ: missing {missing[:5]}, unexpected {extra[:5]}")
        for name, value in flat.items():
            want = target[name]
            if tuple(value.shape) != want.shape or value.dtype != want.dtype:
                raise CheckpointError(
                    f"leaf {name} is {value.dtype}{tuple(value.shape)}, expected "
                    f"{want.dtype}{want.shape}"
                )
        got = fingerprint(flat)
        bad = sorted(k for k in flat if got[k] != meta["fingerprint"].get(k))
        if bad:
            raise CheckpointError(f"data does not match its saved fingerprint in {bad[:5]}")
        return flat

    def _quarantine(self, step: int, error: Exception) -> None:
        moved = self.directory / "corrupt" / f"{step}-{int(time.time())}"
        message = (
            f"checkpoint step {step} in {self.directory} is corrupt or incomplete "
            f"({type(error).__name__}: {str(error)[:300]}); moved it to {moved} and falling back "
            "to the previous checkpoint"
        )
        self.problems.append(message)
        self.report(message)
        self._manager.close()
        if jax.process_index() == 0:
            moved.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), str(moved))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"entropix-quarantine-{step}")
        self._manager = ocp.CheckpointManager(self.directory, options=self.options)

    def wait(self) -> None:
        """Block until every pending asynchronous save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves, then release the checkpoint manager."""
        self._manager.wait_until_finished()
        self._manager.close()


def as_numpy(state: Any) -> dict[str, np.ndarray]:
    """{path: numpy array} of a state's leaves (fully addressable arrays only).

    Args:
        state: a pytree of arrays (e.g. a TrainState).

    Returns:
        dict from each leaf's "/"-joined path to a numpy copy (PRNG keys as key data).
    """
    return {k: np.asarray(jax.device_get(v)) for k, v in flatten_state(state).items()}
