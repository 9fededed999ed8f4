"""What an experiment writes at its end: ``results.json`` (``entropix.results``) and its report
``results.md`` (``entropix.report.render``), plus the interval cells of its tables.
"""

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from entropix.config import ExperimentConfig
from entropix.report import REPORT_FILE, render
from entropix.results import bootstrap_interval, figure, read_results, write_results

__all__ = ["interval_cell", "plot_figures", "save_results"]

CAPTIONS = {  # the PNGs of `entropix plot` (entropix.plots.FIGURES)
    "curves.png": "Entropy and reward over steps (moving average; one run's raw values faint).",
    "entropy_change.png": "Measured entropy change of each logged step against its first-order "
    "prediction <grad H, delta theta> along the update the optimiser made.",
    "quadrants.png": "Each token group's signed share of the predicted entropy change over steps: "
    "advantage sign x sampled-token probability, and forking (top-20% entropy) tokens.",
    "entropy_position.png": "Mean token entropy by position in the response at a few steps.",
    "entropy_law.png": "Reward against entropy with the fit R = -a exp(H) + b, and the ceiling "
    "b - a refitted on the first k steps with its 95% interval.",
}


def interval_cell(values: Iterable[float | None], digits: int = 3) -> str:
    """'mean [lower, upper]' of ``values`` (:func:`entropix.results.bootstrap_interval`, 95%);
    one value: the value; none (or all NaN): '-'.

    Args:
        values: one value per seed (or run); None and non-finite values are left out.
        digits: decimals shown.

    Returns:
        The table cell text.
    """
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    mean, lower, upper = bootstrap_interval(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lower:.{digits}f}, {upper:.{digits}f}]"


def plot_figures(run_dir: str | Path) -> list[dict]:
    """Draw ``entropix plot``'s PNGs for ``run_dir``; their results.json figure entries.

    Args:
        run_dir: a run directory holding ``metrics.jsonl`` (or sub-runs that do).

    Returns:
        One :func:`entropix.results.figure` entry (``id``, ``file`` under ``plots/``,
        ``caption``) per PNG written.
    """
    from entropix.plots import plot_run

    return [
        figure(path.stem, f"plots/{path.name}", CAPTIONS[path.name]) for path in plot_run(run_dir)
    ]


def save_results(
    run_dir: str | Path,
    config: ExperimentConfig,
    *,
    tables: Sequence[dict] = (),
    figures: Sequence[dict] = (),
    targets: Sequence[dict] = (),
) -> Path:
    """Write ``run_dir/results.json`` (experiment and name from ``config``; no name: the run
    directory's) and ``run_dir/results.md`` rendered from it; returns the results file.

    Args:
        run_dir: the run directory (figures must already be in it).
        config: the run's config (gives ``experiment`` and ``name``).
        tables: entries made by :func:`entropix.results.table`.
        figures: entries made by :func:`entropix.results.figure` (e.g. :func:`plot_figures`).
        targets: entries made by :func:`entropix.results.target`.

    Returns:
        The path of ``results.json``.
    """
    path = write_results(
        run_dir,
        experiment=config.experiment,
        name=config.name or Path(run_dir).name,
        tables=tables,
        figures=figures,
        targets=targets,
    )
    (Path(run_dir) / REPORT_FILE).write_text(render(read_results(path)))
    return path
