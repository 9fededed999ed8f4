"""Sharding equivalence on 8 simulated CPU devices (run as a script; JAX must start fresh).

1. The same seeded 5-step run (tiny Llama, Adam, 2 micro-batches) on meshes (1,1,1), (8,1,1),
   (2,4,1), (2,2,2) gives the same losses and parameters to 1e-5.
2. A checkpoint saved on (2,4,1) restores onto (2,2,2) and (1,1,1) with the target shardings
   and identical values, and one more step there matches one more step on (2,4,1).

Prints one JSON line with the results; exit status 1 on any mismatch.
Usage: python tests/train/multidevice_check.py CHECKPOINT_DIR
"""

import json
import math
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402

from entropix.train import (  # noqa: E402
    Checkpointer,
    init_state,
    make_mesh,
    make_train_step,
    shard_batch,
)
from entropix.train.checkpoint import as_numpy  # noqa: E402
from tests.train import tiny_lm  # noqa: E402

MESHES = [(1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2)]
STEPS = 5
TOL = 1e-5


def setup(shape):
    mesh = make_mesh(*shape, devices=jax.devices()[: math.prod(shape)])
    abstract, shardings, create = init_state(tiny_lm.model_fn, tiny_lm.optimizer(), mesh, seed=0)
    step = make_train_step(tiny_lm.loss_fn, micro_batches=2, mesh=mesh, state_sharding=shardings)
    return mesh, abstract, shardings, create, step


def run_steps(state, step, mesh, start, count):
    losses = []
    for i in range(start, start + count):
        state, metrics = step(state, shard_batch(tiny_lm.global_batch(i), mesh))
        losses.append(float(metrics["loss"]))
    return state, losses


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


def main(checkpoint_dir: str) -> int:
    assert jax.device_count() == 8, jax.devices()
    report, ok = {}, True
    runs = {}
    for shape in MESHES:
        mesh, abstract, shardings, create, step = setup(shape)
        state, losses = run_steps(create(), step, mesh, 0, STEPS)
        runs[shape] = (mesh, abstract, shardings, step, state, losses)
    _, _, _, _, base_state, base_losses = runs[(1, 1, 1)]
    base = {k: v for k, v in as_numpy(base_state).items() if k.startswith("params/")}
    for shape, (_, _, _, _, state, losses) in runs.items():
        params = {k: v for k, v in as_numpy(state).items() if k.startswith("params/")}
        loss_diff = float(np.max(np.abs(np.asarray(losses) - base_losses)))
        param_diff = max_diff(params, base)
        report[str(shape)] = {"losses": losses, "loss_diff": loss_diff, "param_diff": param_diff}
        ok &= loss_diff <= TOL and param_diff <= TOL

    # the 2x2x2 run really shards: q_proj kernels over (fsdp, tensor), embedding over tensor
    state_222 = runs[(2, 2, 2)][4]
    q_spec = state_222.params["layers"][0]["attn"]["q_proj"]["kernel"].get_value().sharding.spec
    e_spec = state_222.params["embed"]["embedding"].get_value().sharding.spec
    report["specs"] = {"q_proj": str(q_spec), "embedding": str(e_spec)}
    ok &= tuple(q_spec) == ("fsdp", "tensor") and tuple(e_spec) == ("tensor", "fsdp")

    # checkpoint on (2,4,1), restore onto other meshes, take one more step everywhere
    mesh_a, _, _, step_a, state_a, _ = runs[(2, 4, 1)]
    saver = Checkpointer(checkpoint_dir, every=1, keep=2, async_save=True)
    saver.save(state_a, force=True)
    saver.wait()
    saved = as_numpy(state_a)
    _, next_losses = run_steps(state_a, step_a, mesh_a, STEPS, 1)
    for shape in [(2, 2, 2), (1, 1, 1)]:
        mesh, abstract, shardings, step, _, _ = runs[shape]
        restored = Checkpointer(checkpoint_dir, every=1, keep=2).restore(abstract, shardings)
        exact = all(np.array_equal(v, saved[k]) for k, v in as_numpy(restored).items())
        placed = all(
            leaf.sharding.is_equivalent_to(target, leaf.ndim)
            for leaf, target in zip(
                jax.tree.leaves(restored), jax.tree.leaves(shardings), strict=True
            )
        )
        _, losses = run_steps(restored, step, mesh, STEPS, 1)
        step_diff = abs(losses[0] - next_losses[0])
        report[f"restore->{shape}"] = {"exact": exact, "placed": placed, "step_diff": step_diff}
        ok &= exact and placed and step_diff <= TOL
    report["ok"] = bool(ok)
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
