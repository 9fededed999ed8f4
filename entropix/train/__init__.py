"""Training (layer 8): TrainState, mesh and partition rules, the compiled step, checkpoints,
metrics and the ``fit`` loop. See ``docs/training.md``.
"""

from entropix.train.checkpoint import Checkpointer, CheckpointError, fingerprint, flatten_state
from entropix.train.loop import FitResult, TrainConfig, fit, init_state
from entropix.train.mesh import (
    AXES,
    BATCH_AXES,
    DEFAULT_RULES,
    LLAMA_RULES,
    make_mesh,
    replicated,
    shard_batch,
    spec_for,
    state_shardings,
    tree_shardings,
)
from entropix.train.metrics import MetricsLogger, metrics_postfix, read_metrics
from entropix.train.progress import Progress, tracked
from entropix.train.state import TrainState
from entropix.train.step import (
    NonFiniteError,
    check_guard,
    make_train_step,
    merge_rows,
    nonfinite_terms,
    split_rows,
)

__all__ = [
    "AXES",
    "BATCH_AXES",
    "DEFAULT_RULES",
    "LLAMA_RULES",
    "CheckpointError",
    "Checkpointer",
    "FitResult",
    "MetricsLogger",
    "NonFiniteError",
    "Progress",
    "TrainConfig",
    "TrainState",
    "check_guard",
    "fingerprint",
    "fit",
    "flatten_state",
    "init_state",
    "make_mesh",
    "make_train_step",
    "merge_rows",
    "metrics_postfix",
    "nonfinite_terms",
    "read_metrics",
    "replicated",
    "shard_batch",
    "spec_for",
    "split_rows",
    "state_shardings",
    "tracked",
    "tree_shardings",
]
