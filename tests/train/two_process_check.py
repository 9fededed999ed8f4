"""Multi-process training check (run as a script; JAX must start fresh in each process).

    python two_process_check.py OUT.npz single           # reference: 1 process, 1 device
    python two_process_check.py OUT.npz PORT PROCESS_ID  # one of 2 processes, 2 CPU devices each

The distributed processes join with ``jax.distributed.initialize("127.0.0.1:PORT", 2, id)``
and gloo CPU collectives, form a (data=2, fsdp=2, tensor=1) mesh over the 4 devices, each feed
their half of every batch, and run 3 steps of the tiny Llama task, then save a checkpoint
together and restore it (every process must name the same directory: ``<OUT's folder>/
ckpt-distributed``). Process 0 writes the losses, the gathered parameters and whether the
restored state equals the saved one to OUT.npz (the single-process run writes the same).
"""

import sys
from pathlib import Path

import jax

STEPS = 3


def main(out: str, mode: list[str]) -> int:
    distributed = mode[0] != "single"
    if distributed:
        port, process_id = int(mode[0]), int(mode[1])
        jax.config.update("jax_num_cpu_devices", 2)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", 2, process_id)
        assert jax.device_count() == 4 and jax.local_device_count() == 2

    import numpy as np
    from jax.experimental import multihost_utils

    from entropix.train import Checkpointer, init_state, make_mesh, make_train_step, shard_batch
    from entropix.train.checkpoint import flatten_state
    from tests.train import tiny_lm

    shape = (2, 2, 1) if distributed else (1, 1, 1)
    mesh = make_mesh(*shape, devices=None if distributed else jax.devices()[:1])
    abstract, shardings, create = init_state(tiny_lm.model_fn, tiny_lm.optimizer(), mesh, seed=0)
    step = make_train_step(tiny_lm.loss_fn, mesh=mesh, state_sharding=shardings)
    state, losses = create(), []
    for i in range(STEPS):
        rows = tiny_lm.global_batch(i)
        if distributed:  # this process's contiguous half of the global batch
            half = rows["tokens"].shape[0] // 2
            rows = {"tokens": rows["tokens"][process_id * half : (process_id + 1) * half]}
        state, metrics = step(state, shard_batch(rows, mesh))
        losses.append(float(metrics["loss"]))

    def gathered(tree):
        flat = flatten_state(tree)
        if distributed:
            return {
                k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
                for k, v in flat.items()
            }
        return {k: np.asarray(v) for k, v in flat.items()}

    directory = Path(out).parent / ("ckpt-distributed" if distributed else "ckpt-single")
    checkpointer = Checkpointer(directory, every=1)
    checkpointer.save(state, force=True)
    checkpointer.close()
    restored = Checkpointer(directory, every=1).restore(abstract, shardings)
    saved, loaded = gathered(state), gathered(restored)
    exact = saved.keys() == loaded.keys() and all(
        np.array_equal(saved[k], loaded[k]) for k in saved
    )
    params = {k: v for k, v in saved.items() if k.startswith("params/")}
    if jax.process_index() == 0:
        np.savez(out, losses=np.asarray(losses), restored_exact=np.asarray(exact), **params)
    if distributed:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
