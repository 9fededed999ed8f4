"""Reading finished runs: the metrics table of a run directory, its series, and summaries
(final values and collapse; the entropy-dynamics table of ``entropix dynamics``).

Library code shared by the CLI (``entropix plot``, ``compare``, ``dynamics``), the experiments and
the RL trainer. Importing it is light (numpy only); the training layer's JSONL reader and the
dynamics measures are imported when used.
"""

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

METRICS_FILE = "metrics.jsonl"  # entropix.train.metrics.METRICS_FILE (not imported: start-up)


def metrics_table(run_dir: str | Path) -> dict[str, np.ndarray]:
    """``<run_dir>/metrics.jsonl`` as columns: {key: values [records]} (NaN where a record lacks
    the key or held null; keys with non-numeric values left out), with 'step'.

    Args:
        run_dir: a run directory holding ``metrics.jsonl``.

    Returns:
        ``{key: float64 [records]}``, one entry per numeric key; ``"step"`` is always present
        (the record index when the file logs none).
    """
    from entropix.train import read_metrics  # the training layer imports orbax: only when used

    rows = read_metrics(run_dir)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    table = {}
    for key in keys:
        values = [row.get(key, np.nan) for row in rows]
        if all(isinstance(v, int | float) for v in values):
            table[key] = np.array(values, np.float64)
    if "step" not in table:
        table["step"] = np.arange(len(rows), dtype=np.float64)
    return table


def series(table: dict[str, np.ndarray], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key`` where it was logged.

    Args:
        table: a metrics table (:func:`metrics_table`).
        key: the metric name.

    Returns:
        ``(steps, values)``, float64 [n] each over the records with a finite value (empty
        arrays when ``key`` is absent).
    """
    values = table.get(key)
    if values is None:
        return np.zeros(0), np.zeros(0)
    keep = np.isfinite(values)
    return table["step"][keep], values[keep]


def find_runs(run_dir: str | Path) -> dict[str, Path]:
    """Label -> run directory, for the run and its direct sub-runs (sorted) that hold a
    metrics.jsonl.

    Args:
        run_dir: a run directory, or a directory of runs (``FileNotFoundError`` if it is not a
            directory or none of them holds a metrics.jsonl).

    Returns:
        ``{directory name: path}``: ``run_dir`` itself first when it holds metrics, then its
        sub-directories that do, sorted.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} not found")
    runs = {}
    if (run_dir / METRICS_FILE).is_file():
        runs[run_dir.name] = run_dir
    for sub in sorted(p for p in run_dir.iterdir() if (p / METRICS_FILE).is_file()):
        runs[sub.name] = sub
    if not runs:
        raise FileNotFoundError(f"no {METRICS_FILE} in {str(run_dir)!r} or its sub-directories")
    return runs


def last_logged(table: dict[str, np.ndarray], key: str) -> float:
    """The last logged value of ``key`` (NaN when it was never logged).

    Args:
        table: a metrics table (:func:`metrics_table`).
        key: the metric name.

    Returns:
        The value at the last record with a finite ``key``, or NaN.
    """
    _, values = series(table, key)
    return float(values[-1]) if len(values) else float("nan")


def summarize(run_dir: str | Path, last: int = 5, fraction: float = 0.5, window: int = 5) -> dict:
    """{final_reward, final_entropy, initial_entropy, collapse_step} of one run's metrics.jsonl
    (initial: the mean of the first ``window`` logged values, the H0 of the collapse step).

    Args:
        run_dir: a run directory holding ``metrics.jsonl``.
        last: the final values are the means of the last ``last`` logged values; default 5.
        fraction: the entropy has collapsed at the first step from which it stays below
            ``fraction`` of H0 (``entropix.dynamics.collapse_step``); default 0.5.
        window: logged entropies averaged into H0; default 5.

    Returns:
        ``{"final_reward", "final_entropy", "initial_entropy"}`` floats (NaN when not
        logged) and ``"collapse_step"``, the training step (int) or None when it never
        collapsed.
    """
    import jax.numpy as jnp

    from entropix.dynamics import collapse_step

    table = metrics_table(run_dir)
    row = {}
    for key in ("reward", "entropy"):
        _, values = series(table, key)
        row[f"final_{key}"] = float(np.mean(values[-last:])) if len(values) else float("nan")
    steps, entropy = series(table, "entropy")
    row["initial_entropy"] = float(np.mean(entropy[:window])) if len(entropy) else float("nan")
    index = -1
    if len(entropy):
        h = jnp.asarray(entropy, jnp.float32)
        index = int(collapse_step(h, fraction, min(window, len(entropy))))
    row["collapse_step"] = int(steps[index]) if index >= 0 else None
    return row


def comparison_table(
    run_dirs: Iterable[str | Path], last: int = 5, fraction: float = 0.5, window: int = 5
) -> str:
    """The Markdown table of final reward, final entropy and collapse step of ``run_dirs``
    (one row per run and sub-run).

    Args:
        run_dirs: run directories (each may hold sub-runs, see :func:`find_runs`).
        last: as in :func:`summarize`; default 5.
        fraction: as in :func:`summarize`; default 0.5.
        window: as in :func:`summarize`; default 5.

    Returns:
        The table's lines joined by newlines (no trailing newline); "-" for no collapse.
    """
    lines = ["| run | final reward | final entropy | collapse step |", "|---|---|---|---|"]
    for run_dir in run_dirs:
        for label, path in find_runs(run_dir).items():
            row = summarize(path, last, fraction, window)
            step = "-" if row["collapse_step"] is None else row["collapse_step"]
            lines.append(
                f"| {label} | {row['final_reward']:.3f} | {row['final_entropy']:.3f} | {step} |"
            )
    return "\n".join(lines)


# --- entropy dynamics of a run: how well each estimator predicted dH, and where dH came from ---

DYNAMICS_FILES = ("dynamics_table.md", "dynamics_table.json")
# compared with dH/measured like dH/predicted (dH/second_order: where the probe logged it)
ESTIMATORS = ("dH/logit_law", "dH/sampled_cov", "dH/second_order")
PARTITIONS = {  # token groups whose parts of dH/predicted sum to it
    "quadrants": tuple(
        f"dH/pred/{g}" for g in ("pos_high", "pos_low", "neg_high", "neg_low", "zero")
    ),
    "forking": ("dH/pred/forking", "dH/pred/non_forking"),
}


def paired(
    table: dict[str, np.ndarray], key_x: str, key_y: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, x, y) on the steps where both ``key_x`` and ``key_y`` were logged.

    Args:
        table: a metrics table (:func:`metrics_table`).
        key_x: the first metric name.
        key_y: the second metric name.

    Returns:
        ``(steps, x, y)``, float64 [n] each, sorted by step (empty when no step has both).
    """
    steps_x, x = series(table, key_x)
    steps_y, y = series(table, key_y)
    steps, ix, iy = np.intersect1d(steps_x, steps_y, return_indices=True)
    return steps, x[ix], y[iy]


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN with fewer than 2 points or a constant series.

    Args:
        x: [n] values.
        y: [n] values paired with ``x``.

    Returns:
        r in [-1, 1], or NaN.
    """
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def agreement(estimate: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """How well per-step ``estimate`` predicts ``measured`` (arrays over the same steps):

    corr = Pearson r; r2_identity = 1 - sum (meas - est)^2 / sum (meas - mean meas)^2 (the
    estimate read as the prediction y = x: can be negative); r2_line = corr^2 (R^2 of the
    least-squares line meas ~ alpha + beta est); median_rel_error = median |est - meas| / |meas|
    over steps with meas != 0.

    Args:
        estimate: [n] predicted values (e.g. dH/predicted per step).
        measured: [n] measured values on the same steps.

    Returns:
        ``{"corr", "r2_identity", "r2_line", "median_rel_error"}``; NaN where undefined
        (fewer than 2 points, a constant series, no nonzero measurement).
    """
    corr = correlation(estimate, measured)
    total = np.sum((measured - np.mean(measured)) ** 2) if len(measured) else 0.0
    r2 = 1.0 - np.sum((measured - estimate) ** 2) / total if total > 0 else np.nan
    nonzero = measured != 0
    rel = np.abs(estimate - measured)[nonzero] / np.abs(measured[nonzero])
    return {
        "corr": corr,
        "r2_identity": float(r2),
        "r2_line": corr**2,
        "median_rel_error": float(np.median(rel)) if len(rel) else float("nan"),
    }


def _moved_by_step(table: dict[str, np.ndarray]) -> dict[float, float]:
    """{step: dlogp/max} over the steps that logged it."""
    return dict(zip(*series(table, "dlogp/max"), strict=True))


def residual_summary(table: dict[str, np.ndarray]) -> dict[str, float]:
    """Where the first-order prediction misses: the logged step with the largest squared
    residual r_t = dH/measured - dH/predicted, its share of sum_t r_t^2, and how far that step
    moved the sampled tokens' log-probs (``dlogp/max`` of ``entropix.dynamics.telemetry``: a
    step that moves a token's log-prob by O(1) nats is outside the first-order regime)
    against the median step.

    Args:
        table: a metrics table (:func:`metrics_table`).

    Returns:
        ``{"dH/residual/worst_step" (int), "dH/residual/worst_share"}`` and, when ``dlogp/max``
        was logged, ``"dlogp/max/median"`` (over the steps with dH) and ``"dlogp/max/at_worst"``;
        {} without a step logging both dH metrics or without any residual.
    """
    steps, predicted, measured = paired(table, "dH/predicted", "dH/measured")
    squared = (measured - predicted) ** 2
    if not np.sum(squared) > 0:
        return {}
    worst = int(np.argmax(squared))
    rows = {
        "dH/residual/worst_step": int(steps[worst]),
        "dH/residual/worst_share": float(squared[worst] / np.sum(squared)),
    }
    moved = _moved_by_step(table)
    on_steps = [moved[t] for t in steps if t in moved]
    if on_steps:
        rows["dlogp/max/median"] = float(np.median(on_steps))
        rows["dlogp/max/at_worst"] = float(moved.get(steps[worst], np.nan))
    return rows


def small_step_summary(table: dict[str, np.ndarray], bound: float = 1.0) -> dict[str, float]:
    """The agreement of dH/predicted with dH/measured on the steps that stayed first order:
    those whose ``dlogp/max`` (the largest |log pi_new(y_t) - log pi_old(y_t)| over the step's
    sampled tokens) is at most ``bound``. At 1 nat every sampled token's ratio pi_new / pi_old
    stays within [1/e, e]; a step beyond it is where a Taylor series in the update need not
    converge, so this separates "the first order is wrong" from "the step was not small".

    Args:
        table: a metrics table (:func:`metrics_table`).
        bound: the dlogp/max bound in nats (> 0); default 1.

    Returns:
        ``{"dH/small_steps/bound", "dH/small_steps/steps" (int), "dH/small_steps/corr",
        "dH/small_steps/median_rel_error"}``; {} when dlogp/max was not logged on a step with
        both dH metrics.
    """
    if not bound > 0:
        raise ValueError(f"the dlogp/max bound must be > 0 nats, got {bound}")
    steps, predicted, measured = paired(table, "dH/predicted", "dH/measured")
    moved = _moved_by_step(table)
    if not any(t in moved for t in steps):
        return {}
    small = np.array([moved.get(t, np.inf) <= bound for t in steps], bool)
    scores = agreement(predicted[small], measured[small])
    return {
        "dH/small_steps/bound": float(bound),
        "dH/small_steps/steps": int(small.sum()),
        "dH/small_steps/corr": scores["corr"],
        "dH/small_steps/median_rel_error": scores["median_rel_error"],
    }


def partition_parts(
    table: dict[str, np.ndarray], keys: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(steps, {key: values}) of the groups of a partition that were logged, on the steps where
    any of them was (NaN where a group was not).

    Args:
        table: a metrics table (:func:`metrics_table`).
        keys: the partition's group metrics (e.g. ``PARTITIONS["quadrants"]``).

    Returns:
        ``(steps [n], {key: values [n]})`` for the keys logged at least once; empty steps and
        {} when none was.
    """
    present = [k for k in keys if np.isfinite(table.get(k, [np.nan])).any()]
    if not present:
        return np.zeros(0), {}
    logged = np.any([np.isfinite(table[k]) for k in present], axis=0)
    return table["step"][logged], {k: table[k][logged] for k in present}


def partition_summary(table: dict[str, np.ndarray], keys: Sequence[str]) -> dict[str, float]:
    """Per group g: '<g>/mean' = mean_t g_t and '<g>/share' = sum_t |g_t| / sum_t sum_g' |g'_t|
    (g' over the partition's logged groups; a group missing at a step counts 0 there).

    Args:
        table: a metrics table (:func:`metrics_table`).
        keys: the partition's group metrics (e.g. ``PARTITIONS["forking"]``).

    Returns:
        ``{"<g>/mean", "<g>/share"}`` for each logged group (shares sum to 1; NaN when all
        are 0); {} when no group was logged.
    """
    _, parts = partition_parts(table, keys)
    total = sum(np.nansum(np.abs(v)) for v in parts.values())
    rows = {}
    for key, values in parts.items():
        rows[f"{key}/mean"] = float(np.nanmean(values))
        rows[f"{key}/share"] = float(np.nansum(np.abs(values)) / total) if total > 0 else np.nan
    return rows


def law_summary(table: dict[str, np.ndarray], z: float = 1.96) -> dict[str, float]:
    """The entropy-performance fit R = -a exp(H) + b on the steps logging entropy and reward:
    a, b, ceiling b - a with its z-interval, R^2 and the number of points ({} under 3 points).

    Args:
        table: a metrics table (:func:`metrics_table`) with "entropy" and "reward".
        z: the normal quantile of the ceiling interval; default 1.96 (95%).

    Returns:
        ``{"law/points", "law/a", "law/b", "law/ceiling", "law/r2", "law/ceiling_lower",
        "law/ceiling_upper"}`` (points an int), or {} with fewer than 3 paired steps.
    """
    import jax.numpy as jnp

    from entropix.dynamics import ceiling_interval, fit_entropy_performance

    _, entropy, reward = paired(table, "entropy", "reward")
    if len(entropy) < 3:
        return {}
    h, r = jnp.asarray(entropy, jnp.float32), jnp.asarray(reward, jnp.float32)
    fit, interval = fit_entropy_performance(h, r), ceiling_interval(h, r, z)
    values = {"a": fit.a, "b": fit.b, "ceiling": fit.ceiling, "r2": fit.r2}
    values |= {"ceiling_lower": interval.lower, "ceiling_upper": interval.upper}
    return {"law/points": len(h)} | {f"law/{k}": float(v) for k, v in values.items()}


def dynamics_table(
    table: dict[str, np.ndarray], z: float = 1.96, dlogp_bound: float = 1.0
) -> dict[str, float]:
    """The dynamics rows of one run's metrics table (rows whose metrics were not logged are
    left out): 'steps' with both dH/predicted and dH/measured, ``agreement`` of dH/predicted
    ('dH/predicted/<corr|r2_identity|r2_line|median_rel_error>'), ``residual_summary``,
    ``small_step_summary``, the ``agreement`` of each of ``ESTIMATORS`` (corr,
    median_rel_error) with dH/measured, ``partition_summary`` of each of ``PARTITIONS``, and
    ``law_summary``.

    Args:
        table: a metrics table (:func:`metrics_table`); ``ValueError`` when no step logged
            both dH/predicted and dH/measured.
        z: as in :func:`law_summary`; default 1.96.
        dlogp_bound: as ``bound`` in :func:`small_step_summary`; default 1 nat.

    Returns:
        ``{quantity: value}``, ``"steps"`` first, in the order above.
    """
    _, predicted, measured = paired(table, "dH/predicted", "dH/measured")
    if not len(predicted):
        raise ValueError("the run logged no steps with both dH/predicted and dH/measured")
    rows = {"steps": len(predicted)}
    rows |= {f"dH/predicted/{k}": v for k, v in agreement(predicted, measured).items()}
    rows |= residual_summary(table)
    rows |= small_step_summary(table, dlogp_bound)
    for key in ESTIMATORS:
        _, estimate, meas = paired(table, key, "dH/measured")
        if len(estimate):
            scores = agreement(estimate, meas)
            rows |= {f"{key}/{k}": scores[k] for k in ("corr", "median_rel_error")}
    for keys in PARTITIONS.values():
        rows |= partition_summary(table, keys)
    return rows | law_summary(table, z)


def _cell(value) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def merged_order(orders: Sequence[Sequence[str]]) -> list[str]:
    """The union of several key orders that keeps each one's sequence: a key first seen in a
    later order goes right after its predecessor there (so a run that logged more rows than the
    first run gets them in place, not appended at the end).

    Args:
        orders: key lists, e.g. the rows of each run's :func:`dynamics_table`.

    Returns:
        Every key once; keys of the first order keep their order.
    """
    merged: list[str] = []
    for order in orders:
        after = -1  # insert position after the previous key of this order
        for key in order:
            if key in merged:
                after = merged.index(key)
            else:
                after += 1
                merged.insert(after, key)
    return merged


def dynamics_markdown(tables: dict[str, dict[str, float]]) -> str:
    """One Markdown table: a row per quantity, a column per run ('-' where not logged).

    Args:
        tables: ``{run label: dynamics rows}`` (:func:`dynamics_table` of each run).

    Returns:
        The table's lines joined by newlines (values to 4 significant digits, ints as is); the
        rows follow each run's own order (:func:`merged_order`).
    """
    names = merged_order([list(rows) for rows in tables.values()])
    lines = ["| quantity | " + " | ".join(tables) + " |", "|---" * (len(tables) + 1) + "|"]
    for name in names:
        cells = " | ".join(_cell(rows.get(name)) for rows in tables.values())
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def dynamics_report(
    run_dir: str | Path, z: float = 1.96, dlogp_bound: float = 1.0
) -> tuple[str, dict[str, dict[str, float]]]:
    """The dynamics tables of a run and its sub-runs that logged dH (others skipped), written to
    ``RUN_DIR/dynamics_table.md`` and ``.json``; returns (Markdown, {label: rows}).

    Args:
        run_dir: a run directory or a directory of runs (:func:`find_runs`); ``ValueError``
            when none logged dH/predicted and dH/measured on the same step.
        z: as in :func:`law_summary`; default 1.96.
        dlogp_bound: as ``bound`` in :func:`small_step_summary`; default 1 nat.

    Returns:
        ``(markdown, {label: rows})``: the :func:`dynamics_markdown` table and each run's
        :func:`dynamics_table` (the JSON file holds the same rows, NaN as null).
    """
    import json

    tables = {}
    for label, path in find_runs(run_dir).items():
        table = metrics_table(path)
        if len(paired(table, "dH/predicted", "dH/measured")[0]):  # not e.g. the warm-up in sft/
            tables[label] = dynamics_table(table, z, dlogp_bound)
    if not tables:
        raise ValueError(
            f"no run in {str(run_dir)!r} logged dH/predicted and dH/measured on the same step"
        )
    markdown = dynamics_markdown(tables)
    md_file, json_file = (Path(run_dir) / name for name in DYNAMICS_FILES)
    md_file.write_text(markdown + "\n")
    clean = {label: {k: _json_number(v) for k, v in rows.items()} for label, rows in tables.items()}
    json_file.write_text(json.dumps(clean, indent=1) + "\n")
    return markdown, tables


def _json_number(value):
    return value if np.isfinite(value) else None
