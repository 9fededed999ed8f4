"""Step checkpoints of a pytree as ``.npz`` files (exact resume of the CPU experiments).

``save(dir, step, tree)`` writes ``dir/step_<N>.npz`` (leaves in ``jax.tree`` order; step 0,
the state a run started from, is always kept so sweeps can share it);
``restore_latest(dir, template)`` returns ``(step, tree)`` of the newest one, or ``(None,
template)`` when there is none. Typed PRNG keys are stored as their key data.
"""

from pathlib import Path

import jax
import numpy as np


def _to_numpy(leaf):
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def save(directory, step: int, tree, keep: int = 2) -> Path:
    """Write ``step_<step>.npz``; keep ``step_0`` (the starting point) and the newest ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves(tree)
    path = directory / f"step_{step}.npz"
    tmp = directory / f"step_{step}.tmp.npz"
    np.savez(tmp, *[_to_numpy(leaf) for leaf in leaves])
    tmp.replace(path)
    later = [p for p in directory.glob("step_*[0-9].npz") if _step_of(p) > 0]
    for old in sorted(later, key=_step_of)[:-keep]:
        old.unlink()
    return path


def _step_of(path: Path) -> int:
    return int(path.name.split("_")[1].split(".")[0])


def restore_latest(directory, template):
    """(step, tree shaped like ``template``) of the newest checkpoint, or (None, template)."""
    paths = sorted(Path(directory).glob("step_*[0-9].npz"), key=_step_of)
    if not paths:
        return None, template
    with np.load(paths[-1]) as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    leaves, treedef = jax.tree.flatten(template)
    if len(arrays) != len(leaves):
        raise ValueError(f"checkpoint {paths[-1]} does not match the model being resumed")
    restored = [
        jax.numpy.asarray(a, dtype=leaf.dtype) for a, leaf in zip(arrays, leaves, strict=True)
    ]
    return _step_of(paths[-1]), jax.tree.unflatten(treedef, restored)
