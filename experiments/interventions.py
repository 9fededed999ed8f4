"""Interventions: which entropy interventions keep GRPO from collapsing its policy entropy?

The same GRPO setup (``base``, an ``experiments.grpo`` config) is run once per method and
seed on the RL trainer, in ``<method>_seed<s>/``; each method replaces ``base.loss`` (its reward
and advantage shapers, terms, selector and aggregation) and ``base.controllers`` (the
controllers its terms read: ``entropy_anchor`` for SIREN, ``aepo_temperature`` for AEPO,
``entropy_history`` for EPO, ``adaptive_entropy_coef`` for the adaptive bonus). The supervised
warm-up is done once per seed (``sft_seed<s>``) and shared by every method. A sub-run that
already reached ``base.train.steps`` is not rebuilt, so sweeps over disjoint seeds can run in
parallel into one directory and a last run over every seed only writes the tables.

Per sub-run (:func:`seed_stats`): final reward and entropy (means of the last ``last`` logged
steps), the collapse step (entropy below ``collapse_fraction`` x H0 and staying there, H0 the
mean of the first ``initial_window`` steps; :func:`entropix.dynamics.collapse_step`), H_final /
H0 and the last held-out evaluation (``eval/accuracy``, greedy; ``eval/pass@k`` from
``base.train.eval_samples`` samples per problem). Per method (:func:`method_rows`): the mean
and 95% bootstrap interval over seeds (:func:`entropix.results.bootstrap_interval`) of each,
the collapse step over the seeds that collapsed. Writes ``results.json`` (tables ``methods``
and ``seeds``, figures ``plots/entropy_by_method.png`` -- every method's entropy, mean over
seeds with the min-max band, beside the baseline's -- and ``plots/reward_vs_entropy.png``,
target: the baseline collapses in every seed) and ``results.md``.

With ``reference`` (another sweep's results.json, e.g. the tiny sweep's under docs/results)
the table ``ordering`` ranks the methods both sweeps ran by mean final entropy in each, with
Kendall's tau between the two orders (:func:`kendall_tau`) and the target that the order is
the same (tau = 1): whether a ranking found on the tiny model holds on another setup.

AEPO's term is evaluated on its own batch sampled at the controller's temperature.
"""

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from entropix.config import ControllerSpec, ExperimentConfig
from entropix.results import figure, read_results, target
from entropix.results import table as results_table
from entropix.rl import LossConfig
from entropix.runs import last_logged, metrics_table, series, summarize
from entropix.train import tracked
from experiments import grpo
from experiments.reporting import interval_cell, save_results

BASELINE = "baseline"


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
    reference: str = ""  # results.json of another sweep: compare the methods' entropy order


def sub_run(run_dir: str | Path, method: str, seed: int) -> Path:
    """The directory of one method x seed sub-run of the sweep.

    Args:
        run_dir: the sweep's run directory.
        method: the method's name (a key of ``Config.methods``).
        seed: the seed.

    Returns:
        ``run_dir/<method>_seed<seed>``.
    """
    return Path(run_dir) / f"{method}_seed{seed}"


def finished(run_dir: str | Path, steps: int) -> bool:
    """Whether the run in ``run_dir`` logged its step ``steps`` (the last one).

    Args:
        run_dir: a sub-run's directory (it may not exist yet).
        steps: the run's last step (``base.train.steps``).

    Returns:
        True when its ``metrics.jsonl`` has a ``reward`` logged at step ``steps`` or later.
    """
    if not (Path(run_dir) / "metrics.jsonl").is_file():
        return False
    logged, _ = series(metrics_table(run_dir), "reward")
    return bool(len(logged)) and logged[-1] >= steps


def seed_stats(run_dir: str | Path, config: Config) -> dict:
    """The final values, collapse and last evaluation of one sub-run (see the module doc).

    Args:
        run_dir: a finished sub-run's directory.
        config: the sweep config (``last``, ``collapse_fraction``, ``initial_window``, and
            ``base.train`` for the eval columns).

    Returns:
        :func:`entropix.runs.summarize`'s ``final_reward``, ``final_entropy``,
        ``initial_entropy``, ``collapse_step``, plus ``entropy_ratio`` (H_final / H0),
        ``eval/accuracy`` and ``eval/pass@k`` for each eval k (NaN when not logged).
    """
    stats = summarize(run_dir, config.last, config.collapse_fraction, config.initial_window)
    table = metrics_table(run_dir)
    stats["entropy_ratio"] = stats["final_entropy"] / stats["initial_entropy"]
    stats["eval/accuracy"] = last_logged(table, "eval/accuracy")
    for k in config.base.train.eval_k if config.base.train.eval_samples else ():
        stats[f"eval/pass@{k}"] = last_logged(table, f"eval/pass@{k}")
    return stats


COLUMNS = (  # (stats key, column title) of the interval columns
    ("final_reward", "final reward"),
    ("final_entropy", "final entropy"),
    ("entropy_ratio", "H_final / H0"),
)


def eval_columns(config: Config) -> list[tuple[str, str]]:
    """The evaluation columns of the tables: greedy accuracy, then pass@k for each k of
    ``base.train.eval_k`` when ``base.train.eval_samples`` samples are drawn.

    Args:
        config: the sweep config.

    Returns:
        ``(stats key, column title)`` pairs.
    """
    ks = config.base.train.eval_k if config.base.train.eval_samples else ()
    return [("eval/accuracy", "greedy acc")] + [(f"eval/pass@{k}", f"pass@{k}") for k in ks]


def method_rows(stats: dict[str, list[dict]], config: Config) -> tuple[list[str], list[list]]:
    """(header, rows) of the per-method table: collapsed seeds, the collapse step (mean and
    interval over the seeds that collapsed) and the mean [95% interval] of each column.

    Args:
        stats: per method (in sweep order), one :func:`seed_stats` dict per seed of
            ``config.seeds``.
        config: the sweep config (gives the eval columns).

    Returns:
        ``(header, rows)``: the column titles and one row of cell texts per method.
    """
    columns = [*COLUMNS, *eval_columns(config)]
    header = ["method", "collapsed", "collapse step", *(title for _, title in columns)]
    rows = []
    for method, runs in stats.items():
        steps = [r["collapse_step"] for r in runs if r["collapse_step"] is not None]
        row = [method, f"{len(steps)}/{len(runs)}", interval_cell(steps, digits=0)]
        row += [interval_cell([r[key] for r in runs]) for key, _ in columns]
        rows.append(row)
    return header, rows


def seed_rows(stats: dict[str, list[dict]], config: Config) -> tuple[list[str], list[list]]:
    """(header, rows) of the per-seed table (one row per sub-run, raw values).

    Args:
        stats: per method (in sweep order), one :func:`seed_stats` dict per seed of
            ``config.seeds``.
        config: the sweep config (gives the seeds and the eval columns).

    Returns:
        ``(header, rows)``: the column titles and one row per method x seed (method, seed,
        collapse step or None, then the raw column values).
    """
    columns = [*COLUMNS, *eval_columns(config)]
    header = ["method", "seed", "collapse step", *(title for _, title in columns)]
    rows = [
        [method, seed, r["collapse_step"], *(r[key] for key, _ in columns)]
        for method, runs in stats.items()
        for seed, r in zip(config.seeds, runs, strict=True)
    ]
    return header, rows


def kendall_tau(x: Iterable[float], y: Iterable[float]) -> float:
    """Kendall's tau-a of two orderings: (concordant - discordant pairs) / pairs, where a pair
    (i, j) is concordant when sign(x_i - x_j) = sign(y_i - y_j) != 0 (NaN under 2 items).

    Args:
        x: one score per item.
        y: another score per item, same length.

    Returns:
        tau in [-1, 1] (ties count 0), or NaN for fewer than 2 items.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    i, j = np.triu_indices(len(x), k=1)
    if not len(i):
        return float("nan")
    return float(np.mean(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])))


def seed_means(doc: dict, column: str) -> dict[str, float]:
    """Per method, the mean over seeds of ``column`` in a sweep results.json's ``seeds``
    table.

    Args:
        doc: a sweep's results.json content (:func:`entropix.results.read_results`).
        column: a column title of its ``seeds`` table, e.g. ``"final entropy"``.

    Returns:
        ``{method: mean}`` ignoring null cells (NaN when all are null).
    """
    (seeds,) = [t for t in doc["tables"] if t["id"] == "seeds"]
    col, name = seeds["header"].index(column), seeds["header"].index("method")
    values: dict[str, list[float]] = {}
    for row in seeds["rows"]:
        values.setdefault(row[name], []).append(np.nan if row[col] is None else row[col])
    return {method: float(np.nanmean(v)) for method, v in values.items()}


def ordering(stats: dict[str, list[dict]], reference: dict) -> tuple[dict, dict]:
    """(table, target) comparing the methods' order by mean final entropy with a reference.

    Args:
        stats: per method (in sweep order), one :func:`seed_stats` dict per seed of
            ``config.seeds``.
        reference: another sweep's results.json content (with a ``seeds`` table and a
            ``name``).

    Returns:
        ``(table, target)``: the ``ordering`` table entry (entropy and rank in each sweep of
        the methods both ran) and the target that Kendall's tau is 1.

    Raises:
        ValueError: the sweeps share fewer than 2 methods.
    """
    ours = {m: float(np.mean([r["final_entropy"] for r in runs])) for m, runs in stats.items()}
    theirs = seed_means(reference, "final entropy")
    common = [m for m in ours if m in theirs]
    if len(common) < 2:
        raise ValueError(
            f"reference {reference['name']!r} shares {common} with this sweep: need 2 methods"
        )
    x, y = [ours[m] for m in common], [theirs[m] for m in common]
    rank_x, rank_y = (np.argsort(np.argsort(-np.asarray(v))) + 1 for v in (x, y))
    rows = [[m, x[i], int(rank_x[i]), y[i], int(rank_y[i])] for i, m in enumerate(common)]
    tau = kendall_tau(x, y)
    header = ["method", "final entropy", "rank", f"final entropy ({reference['name']})", "rank"]
    notes = f"rank 1 = highest mean final entropy; Kendall tau of the two orders = {tau:.3f}."
    entry = results_table(
        "ordering", f"Final-entropy order against {reference['name']}", header, rows, notes
    )
    text = f"methods in the same order of final entropy as {reference['name']} (Kendall tau)"
    return entry, target(text, tau == 1.0, tau)


def _curves(run_dirs, key: str):
    """(steps, [seeds, steps] values) of ``key`` over sub-runs, cut to the shortest run."""
    logged = [series(metrics_table(d), key) for d in run_dirs]
    n = min(len(v) for _, v in logged)
    return logged[0][0][:n], np.stack([v[:n] for _, v in logged])


def plot(run_dir: Path, config: Config, stats: dict[str, list[dict]]) -> list[str]:
    """The two figures of the sweep (files relative to ``run_dir``).

    Args:
        run_dir: the sweep's run directory (the sub-runs are read, ``plots/`` is written).
        config: the sweep config.
        stats: per method (in sweep order), one :func:`seed_stats` dict per seed of
            ``config.seeds``.

    Returns:
        ``["plots/entropy_by_method.png", "plots/reward_vs_entropy.png"]``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from entropix.plots import smooth

    methods = list(config.methods)
    curves = {
        m: _curves([sub_run(run_dir, m, s) for s in config.seeds], "entropy") for m in methods
    }
    cols = 4
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.5 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.45)
    reference = curves.get(BASELINE)
    h0 = np.mean([r["initial_entropy"] for r in stats.get(BASELINE, stats[methods[0]])])
    for ax, method in zip(axes.flat, methods, strict=False):
        if reference is not None and method != BASELINE:
            ax.plot(reference[0], smooth(reference[1].mean(0)), color="0.6", lw=1, label=BASELINE)
        steps, values = curves[method]
        smoothed = np.stack([smooth(v) for v in values])
        ax.fill_between(steps, smoothed.min(0), smoothed.max(0), color="C0", alpha=0.25, lw=0)
        ax.plot(steps, smoothed.mean(0), color="C0", lw=1.4, label=method)
        ax.axhline(config.collapse_fraction * h0, color="C3", ls="--", lw=0.8)
        ax.set_title(method, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(methods) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("entropy (nats)", fontsize=8)
    fig.tight_layout()
    (run_dir / "plots").mkdir(exist_ok=True)
    files = ["plots/entropy_by_method.png", "plots/reward_vs_entropy.png"]
    fig.savefig(run_dir / files[0], dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (method, runs) in enumerate(stats.items()):
        x = np.array([r["final_entropy"] for r in runs])
        y = np.array([r["final_reward"] for r in runs])
        colour = f"C{i % 10}"
        marker = "o" if i < 10 else "s"
        ax.scatter(x, y, s=10, color=colour, marker=marker, alpha=0.4)
        ax.errorbar(x.mean(), y.mean(), xerr=np.ptp(x) / 2, yerr=np.ptp(y) / 2, color=colour,
                    marker=marker, ms=6, lw=1, label=method)  # fmt: skip
    ax.axvline(config.collapse_fraction * h0, color="C3", ls="--", lw=0.8)
    ax.set_xlabel("final entropy (nats)")
    ax.set_ylabel("final reward")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(run_dir / files[1], dpi=80)
    plt.close(fig)
    return files


def run(config: Config, run_dir: str | Path) -> dict:
    """Run every method x seed not finished yet, then write the tables and figures.

    Args:
        config: the sweep config.
        run_dir: the sweep's run directory (sub-runs, shared warm-ups, results).

    Returns:
        The summary of :func:`write_report`.

    Raises:
        ValueError: ``methods`` is empty.
    """
    if not config.methods:
        raise ValueError("interventions: `methods` is empty; name at least one method")
    run_dir = Path(run_dir)
    runs = [(seed, method) for seed in config.seeds for method in config.methods]
    for seed, method in tracked(runs, "sweep", label=lambda r: f"{r[1]} seed {r[0]}"):
        spec = config.methods[method]
        sub = sub_run(run_dir, method, seed)
        if finished(sub, config.base.train.steps):
            continue
        base = dataclasses.replace(
            config.base, seed=seed, loss=spec.loss, controllers=spec.controllers, name=method
        )
        grpo.run(base, sub, sft_dir=run_dir / f"sft_seed{seed}", report=False)
    return write_report(config, run_dir)


def write_report(config: Config, run_dir: str | Path) -> dict:
    """``results.json`` / ``results.md`` of finished sub-runs; returns the per-method means.

    Args:
        config: the sweep config.
        run_dir: the sweep's run directory, every method x seed sub-run finished.

    Returns:
        ``{method: {"final_reward", "final_entropy", "entropy_ratio", "collapsed"}}``: means
        over seeds (``collapsed``: the share of seeds that collapsed).
    """
    run_dir = Path(run_dir)
    stats = {
        m: [seed_stats(sub_run(run_dir, m, s), config) for s in config.seeds]
        for m in config.methods
    }
    files = plot(run_dir, config, stats)
    seeds = len(config.seeds)
    notes = (
        f"Mean [95% bootstrap interval] over {seeds} seeds ({', '.join(map(str, config.seeds))}); "
        f"final = mean of the last {config.last} steps; collapsed: entropy below "
        f"{config.collapse_fraction} x H0 (H0: mean of the first {config.initial_window} steps) "
        "and staying there; collapse step over the seeds that collapsed; greedy acc and pass@k "
        "on held-out problems at the last step."
    )
    tables = [
        results_table("methods", "Methods over seeds", *method_rows(stats, config), notes=notes),
        results_table("seeds", "Every run", *seed_rows(stats, config)),
    ]
    figures = [
        figure(
            "entropy_by_method",
            files[0],
            "Policy entropy over GRPO steps per method (moving average): mean over seeds, band = "
            "min-max over seeds; grey: the baseline; dashed: the collapse threshold "
            f"{config.collapse_fraction} x H0 of the baseline.",
        ),
        figure(
            "reward_vs_entropy",
            files[1],
            "Final reward against final entropy: one faint point per seed, the mean with bars "
            "spanning the seeds; dashed: the collapse threshold.",
        ),
    ]
    targets = []
    if config.reference:
        entry, check = ordering(stats, read_results(config.reference))
        tables.append(entry)
        targets.append(check)
    if BASELINE in stats:
        share = np.mean([r["collapse_step"] is not None for r in stats[BASELINE]])
        targets.append(target("the baseline collapses in every seed", share == 1.0, share))
    save_results(run_dir, config, tables=tables, figures=figures, targets=targets)
    return {
        method: {
            key: float(np.mean([r[key] for r in runs]))
            for key in ("final_reward", "final_entropy", "entropy_ratio")
        }
        | {"collapsed": float(np.mean([r["collapse_step"] is not None for r in runs]))}
        for method, runs in stats.items()
    }
