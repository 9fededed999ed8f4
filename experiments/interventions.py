"""Interventions: which entropy interventions keep GRPO from collapsing its policy entropy?

The same GRPO setup (``base``, an ``experiments.grpo`` config) is run once per method and
seed on the RL trainer; each method replaces ``base.loss`` (its reward and advantage shapers,
terms, selector and aggregation) and ``base.controllers`` (the controllers its terms read:
``entropy_anchor`` for SIREN, ``aepo_temperature`` for AEPO, ``entropy_history`` for EPO,
``adaptive_entropy_coef`` for the adaptive bonus). The supervised warm-up is done once per
seed (``sft_seed<s>``) and shared by every method. Writes one sub-run per method/seed,
``interventions.md`` (final reward, final entropy, collapse step, collapsed, eval accuracy),
``interventions.json`` and ``plots/curves.png`` (entropy and reward of every method).

Collapse: entropy falls below ``collapse_fraction`` of its initial value (mean of the first
``initial_window`` logged steps) and stays there (:func:`entropix.dynamics.collapse_step`).
AEPO's term is evaluated on its own batch sampled at the controller's temperature.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from entropix.config import ControllerSpec, ExperimentConfig
from entropix.rl import LossConfig
from entropix.runs import summarize
from experiments import grpo
from experiments.reporting import markdown_table


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the sweep: the loss and the controllers its terms read."""

    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    controllers: tuple[ControllerSpec, ...] = ()


@dataclasses.dataclass(frozen=True)
class Config(ExperimentConfig):
    experiment: str = "interventions"
    base: grpo.Config = dataclasses.field(default_factory=grpo.Config)
    methods: dict[str, Method] = dataclasses.field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    collapse_fraction: float = 0.5
    initial_window: int = 5
    last: int = 10  # final values average the last N logged steps


def run(config: Config, run_dir) -> dict:
    """Run every method x seed (resuming finished/partial sub-runs) and write the table."""
    if not config.methods:
        raise ValueError("interventions: `methods` is empty; name at least one method")
    run_dir = Path(run_dir)
    rows, summary = [], {}
    for seed in config.seeds:
        for method, spec in config.methods.items():
            sub = run_dir / (method if len(config.seeds) == 1 else f"{method}_seed{seed}")
            base = dataclasses.replace(
                config.base, seed=seed, loss=spec.loss, controllers=spec.controllers, name=method
            )
            result = grpo.run(base, sub, sft_dir=run_dir / f"sft_seed{seed}")
            stats = summarize(sub, config.last, config.collapse_fraction, config.initial_window)
            collapsed = stats["collapse_step"] is not None
            accuracy = result.get("final_eval_accuracy")
            rows.append(
                [
                    method,
                    seed,
                    stats["final_reward"],
                    stats["final_entropy"],
                    stats["collapse_step"],
                    "yes" if collapsed else "no",
                    accuracy,
                ]
            )
            summary.setdefault(method, []).append(
                {**stats, "collapsed": collapsed, "eval_accuracy": accuracy}
            )
    header = [
        "method",
        "seed",
        "final reward",
        "final entropy",
        "collapse step",
        "collapsed",
        "eval accuracy",
    ]
    (run_dir / "interventions.md").write_text(markdown_table(header, rows) + "\n")
    (run_dir / "interventions.json").write_text(json.dumps(summary, indent=2))
    return {
        method: {
            "final_reward": float(np.mean([r["final_reward"] for r in runs])),
            "final_entropy": float(np.mean([r["final_entropy"] for r in runs])),
            "collapsed": sum(r["collapsed"] for r in runs) / len(runs),
        }
        for method, runs in summary.items()
    }
