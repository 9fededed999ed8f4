"""Interventions: which entropy interventions keep GRPO from collapsing its policy entropy?

The same GRPO setup (``base``, an ``experiments.grpo`` config) is run once per method and
seed; each method replaces ``base.loss`` (its terms, selector and aggregation). The SFT warm-up
is done once per seed and shared by every method. Writes one sub-run per method/seed,
``interventions.md`` (final reward, final entropy, collapse step, collapsed, eval accuracy) and
``plots/curves.png`` (entropy and reward of every method).

Collapse: entropy falls below ``collapse_fraction`` of its initial value (mean of the first
``initial_window`` logged steps) and stays there (:func:`entropix.dynamics.collapse_step`).
AEPO's term is evaluated on the same temperature-1 batch as the policy loss, not on a separate
temperature-T batch as in the paper.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from entropix.commands.compare import summarize
from entropix.config import ExperimentConfig
from experiments import grpo
from experiments.reporting import markdown_table


@dataclasses.dataclass(frozen=True)
class Config(ExperimentConfig):
    experiment: str = "interventions"
    base: grpo.Config = dataclasses.field(default_factory=grpo.Config)
    methods: dict[str, grpo.LossConfig] = dataclasses.field(default_factory=dict)
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
        shared_start = None  # the first method's post-SFT state, copied to the others
        for method, loss in config.methods.items():
            sub = run_dir / (method if len(config.seeds) == 1 else f"{method}_seed{seed}")
            if shared_start is not None and not (sub / grpo.START_DIR).is_dir():
                shutil.copytree(shared_start, sub / grpo.START_DIR)
            base = dataclasses.replace(config.base, seed=seed, loss=loss, name=method)
            result = grpo.run(base, sub)
            shared_start = shared_start or sub / grpo.START_DIR
            stats = summarize(sub, config.last, config.collapse_fraction, config.initial_window)
            collapsed = stats["collapse_step"] is not None
            rows.append(
                [
                    method,
                    seed,
                    stats["final_reward"],
                    stats["final_entropy"],
                    stats["collapse_step"],
                    "yes" if collapsed else "no",
                    result["final_eval_accuracy"],
                ]
            )
            summary.setdefault(method, []).append(
                {**stats, "collapsed": collapsed, "eval_accuracy": result["final_eval_accuracy"]}
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
