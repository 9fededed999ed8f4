"""GRPO on a verifiable task, with any composition of entropy interventions from the config.

Question: how do policy entropy and reward evolve under GRPO (and the interventions named in
``loss.terms``)? The policy (the tiny decoder, or SmolLM2 from its GGUF) is optionally fitted
to the task's answer format by a supervised warm-up (``sft``), then trained by the RL trainer
``entropix.rl``: per prompt a group of responses is sampled, the reward is 1[correct] +
format_coef * 1[well formed], advantages come from the configured shapers (``grpo``:
(r - mean_group) / (std_group + eps)), and the loss is ``compose(*terms)`` in one compiled,
sharded step. Logged per step: reward, accuracy, entropy (token mean over the sampled
positions), the loss terms' metrics, the optimiser's and the guard's, and every
``dynamics.every`` steps the measured entropy change, its exact first-order prediction, their
token-group parts and entropy telemetry (``dH/*``, ``entropy/*``). See ``docs/rl.md`` for
every section of the config.
"""

import dataclasses

from entropix import rl


@dataclasses.dataclass(frozen=True)
class Config(rl.RLConfig):
    experiment: str = "grpo"


def run(config: Config, run_dir, *, sft_dir=None) -> dict:
    """Warm-up and GRPO in ``run_dir`` (resuming its checkpoints); ``sft_dir`` shares a warm-up
    between runs (the interventions sweep). Returns the run's summary."""
    return rl.train(config, run_dir, sft_dir=sft_dir)
