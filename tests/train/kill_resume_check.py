"""Train the tiny Llama task with ``fit`` in RUN_DIR; optionally SIGKILL itself mid-run.

    python kill_resume_check.py RUN_DIR OUT.npz [KILL_AT]

Runs 8 steps, checkpointing every 3 (asynchronously). With KILL_AT the process sends itself
SIGKILL when asked for the batch at that position (after step KILL_AT finished and its save
may still be in flight). Without it, training runs (or resumes) to the end and every array of
the final state goes to OUT.npz.
"""

import os
import signal
import sys

STEPS = 8


def main(run_dir: str, out: str, kill_at: int | None) -> int:
    import numpy as np

    from entropix.train import TrainConfig, fit
    from entropix.train.checkpoint import as_numpy
    from tests.train import tiny_lm

    def data(position, state):
        if position == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return tiny_lm.global_batch(position)

    config = TrainConfig(steps=STEPS, checkpoint_every=3, keep=2, mesh=(1, 1, 1), seed=0)
    result = fit(
        run_dir,
        model_fn=tiny_lm.model_fn,
        optimizer=tiny_lm.optimizer(),
        loss_fn=tiny_lm.loss_fn,
        data=data,
        config=config,
    )
    resumed = -1 if result.resumed_from is None else result.resumed_from
    np.savez(out, resumed_from=np.asarray(resumed), **as_numpy(result.state))
    return 0


if __name__ == "__main__":
    kill = int(sys.argv[3]) if len(sys.argv) > 3 else None
    sys.exit(main(sys.argv[1], sys.argv[2], kill))
