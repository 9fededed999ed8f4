"""Reading finished runs: the metrics table of a run directory, its series, and summaries.

Library code shared by the CLI (``entropix plot``, ``entropix compare``), the experiments and
the RL trainer. Importing it is light (numpy only); the training layer's JSONL reader and the
dynamics measures are imported when used.
"""

from pathlib import Path

import numpy as np

METRICS_FILE = "metrics.jsonl"  # entropix.train.metrics.METRICS_FILE (not imported: start-up)


def metrics_table(run_dir) -> dict[str, np.ndarray]:
    """``<run_dir>/metrics.jsonl`` as columns: {key: values [records]} (NaN where a record lacks
    the key or held null; keys with non-numeric values left out), with 'step'."""
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
    """(steps, values) of ``key`` where it was logged."""
    values = table.get(key)
    if values is None:
        return np.zeros(0), np.zeros(0)
    keep = np.isfinite(values)
    return table["step"][keep], values[keep]


def find_runs(run_dir) -> dict[str, Path]:
    """Label -> run directory, for the run and its direct sub-runs (sorted) that hold a
    metrics.jsonl."""
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


def summarize(run_dir, last: int = 5, fraction: float = 0.5, window: int = 5) -> dict:
    """{final_reward, final_entropy, collapse_step} of one run's metrics.jsonl."""
    import jax.numpy as jnp

    from entropix.dynamics import collapse_step

    table = metrics_table(run_dir)
    row = {}
    for key in ("reward", "entropy"):
        _, values = series(table, key)
        row[f"final_{key}"] = float(np.mean(values[-last:])) if len(values) else float("nan")
    steps, entropy = series(table, "entropy")
    index = -1
    if len(entropy):
        h = jnp.asarray(entropy, jnp.float32)
        index = int(collapse_step(h, fraction, min(window, len(entropy))))
    row["collapse_step"] = int(steps[index]) if index >= 0 else None
    return row


def comparison_table(run_dirs, last: int = 5, fraction: float = 0.5, window: int = 5) -> str:
    """The Markdown table of final reward, final entropy and collapse step of ``run_dirs``
    (one row per run and sub-run)."""
    lines = ["| run | final reward | final entropy | collapse step |", "|---|---|---|---|"]
    for run_dir in run_dirs:
        for label, path in find_runs(run_dir).items():
            row = summarize(path, last, fraction, window)
            step = "-" if row["collapse_step"] is None else row["collapse_step"]
            lines.append(
                f"| {label} | {row['final_reward']:.3f} | {row['final_entropy']:.3f} | {step} |"
            )
    return "\n".join(lines)
