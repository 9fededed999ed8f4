"""The RL trainer (layer 9): rollouts -> rewards -> advantages -> one compiled, sharded update,
driven by ``entropix.train.fit`` (see ``docs/rl.md``).

    from entropix.rl import RLConfig, train
    summary = train(RLConfig(...), "runs/grpo")
"""

from entropix.rl.advantages import AdvantageStage
from entropix.rl.config import (
    DataConfig,
    LossConfig,
    MeshConfig,
    ModelConfig,
    OptimConfig,
    RLConfig,
    RolloutConfig,
    RunConfig,
    SFTConfig,
    TaskConfig,
    UpdateConfig,
)
from entropix.rl.export import export_policy
from entropix.rl.policy import Policy, build_policy, make_source
from entropix.rl.rollout import Rollouts, to_global, to_host
from entropix.rl.seeds import SeedsProgram, SeedsResult, run_seeds
from entropix.rl.sft import sft_loss, warm_start
from entropix.rl.trainer import Plan, build, fit_config, run, summary, train
from entropix.rl.update import PolicyForward, Update

__all__ = [
    "AdvantageStage",
    "DataConfig",
    "LossConfig",
    "MeshConfig",
    "ModelConfig",
    "OptimConfig",
    "Plan",
    "Policy",
    "PolicyForward",
    "RLConfig",
    "RolloutConfig",
    "Rollouts",
    "RunConfig",
    "SFTConfig",
    "SeedsProgram",
    "SeedsResult",
    "TaskConfig",
    "Update",
    "UpdateConfig",
    "build",
    "build_policy",
    "export_policy",
    "fit_config",
    "make_source",
    "run",
    "run_seeds",
    "sft_loss",
    "summary",
    "to_global",
    "to_host",
    "train",
    "warm_start",
]
