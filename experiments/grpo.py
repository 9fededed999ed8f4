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

At the end (:func:`write_report`) ``results.json`` / ``results.md`` hold the run's table:
H0 (mean entropy of the first ``initial_window`` steps), final entropy and reward (means of
the last ``last`` steps), the collapse step (entropy below ``collapse_fraction`` x H0 and
staying there), the entropy-performance law R = -a exp(H) + b fitted on every step with its
ceiling b - a and 95% interval (``entropix.runs.law_summary``), and the first and last
held-out evaluation; the dynamics table (``entropix.runs.dynamics_table``) when dH was logged;
the plots of ``entropix plot``. With ``expect_collapse`` (``configs/collapse_tiny.yaml``) two
targets: the entropy collapses, and the final reward lies within ``ceiling_tolerance`` of the
law's ceiling.
"""

import dataclasses
from pathlib import Path

from entropix import rl
from entropix.results import table, target
from entropix.runs import dynamics_table, law_summary, metrics_table, paired, series, summarize
from experiments.reporting import plot_figures, save_results


@dataclasses.dataclass(frozen=True)
class Config(rl.RLConfig):
    experiment: str = "grpo"
    collapse_fraction: float = 0.5
    initial_window: int = 5
    last: int = 10  # final values average the last N logged steps
    expect_collapse: bool = False  # report the collapse targets
    ceiling_tolerance: float = 0.05


def run(
    config: Config,
    run_dir: str | Path,
    *,
    sft_dir: str | Path | None = None,
    report: bool = True,
) -> dict:
    """Warm-up and GRPO in ``run_dir`` (resuming its checkpoints); ``sft_dir`` shares a warm-up
    between runs (the interventions sweep, which passes ``report=False``: its own tables
    cover the sub-runs). Returns the run's summary.

    Args:
        config: the resolved experiment config.
        run_dir: the run directory (metrics, checkpoints, results).
        sft_dir: the supervised warm-up's run directory; None: ``run_dir/sft``.
        report: write ``results.json`` / ``results.md`` and the plots at the end.

    Returns:
        The run's summary (:func:`entropix.rl.summary`): final reward and entropy, collapse
        step, first / last eval accuracy.
    """
    summary = rl.train(config, run_dir, sft_dir=sft_dir)
    if report:
        write_report(config, run_dir)
    return summary


def _evaluations(metrics) -> list[list]:
    """Rows (quantity, value) of the first and the last logged value of every eval/ metric."""
    rows = []
    for key in sorted(k for k in metrics if k.startswith("eval/")):
        steps, values = series(metrics, key)
        if len(values):
            rows.append([f"{key} at step {int(steps[0])}", float(values[0])])
            rows.append([f"{key} at step {int(steps[-1])}", float(values[-1])])
    return rows


def write_report(config: Config, run_dir: str | Path) -> Path:
    """``results.json`` and ``results.md`` of a finished run (see the module docstring).

    Args:
        config: the run's config (``last``, ``initial_window``, ``collapse_fraction``,
            ``expect_collapse``, ``ceiling_tolerance`` shape the table and targets).
        run_dir: the finished run's directory (reads its ``metrics.jsonl``).

    Returns:
        The path of ``results.json``.
    """
    run_dir = Path(run_dir)
    metrics = metrics_table(run_dir)
    stats = summarize(run_dir, config.last, config.collapse_fraction, config.initial_window)
    _, rewards = series(metrics, "reward")
    law = law_summary(metrics)
    rows = [
        ["steps", len(rewards)],
        [f"H0 (first {config.initial_window} steps)", stats["initial_entropy"]],
        [f"final entropy (last {config.last} steps)", stats["final_entropy"]],
        ["final entropy / H0", stats["final_entropy"] / stats["initial_entropy"]],
        [
            f"collapse step (below {config.collapse_fraction} x H0 to the end)",
            stats["collapse_step"],
        ],
        [f"initial reward (first {config.last} steps)", float(rewards[: config.last].mean())],
        [f"final reward (last {config.last} steps)", stats["final_reward"]],
    ]
    if law:
        rows += [
            [f"law {k}", law[f"law/{k}"]]
            for k in ("a", "b", "r2", "ceiling", "ceiling_lower", "ceiling_upper")
        ]
        rows.append(["final reward - ceiling", stats["final_reward"] - law["law/ceiling"]])
    rows += _evaluations(metrics)
    notes = (
        "law: R = -a exp(H) + b fitted to (entropy, reward) of every step; ceiling = b - a "
        "(R at H = 0) with its 95% interval. eval/: held-out problems (greedy accuracy; "
        "pass@k / maj@k of the sampled answers)."
    )
    header = ["quantity", "value"]
    tables = [table("run", "Entropy, reward and the entropy-performance law", header, rows, notes)]
    if len(paired(metrics, "dH/predicted", "dH/measured")[0]):
        rows = dynamics_table(metrics).items()
        dynamics = [[k, v] for k, v in rows if not k.startswith("law/")]  # in the first table
        tables.append(
            table(
                "dynamics", "Predicted vs measured entropy change", ["quantity", "value"], dynamics
            )
        )
    targets = []
    if config.expect_collapse:
        step = stats["collapse_step"]
        targets.append(
            target(
                f"entropy falls below {config.collapse_fraction} x H0 and stays there (step)",
                step is not None,
                step,
            )
        )
        if law:
            gap = stats["final_reward"] - law["law/ceiling"]
            targets.append(
                target(
                    f"final reward within {config.ceiling_tolerance} of the law's ceiling b - a "
                    "(final - ceiling)",
                    abs(gap) <= config.ceiling_tolerance,
                    gap,
                )
            )
    return save_results(
        run_dir, config, tables=tables, figures=plot_figures(run_dir), targets=targets
    )
