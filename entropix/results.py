"""Result files of finished experiments and the statistics their tables report.

Every experiment writes ``<run_dir>/results.json`` (:func:`write_results`); ``entropix report``
renders the Markdown tables and figure links in ``docs/results/`` from those files, so no table
in the docs is typed by hand. The file holds::

    {"experiment": str, "name": str, "created": ISO-8601 UTC time,
     "tables": [{"id": str, "title": str, "header": [str, ...], "rows": [[cell, ...], ...],
                 "notes": str (optional)}],
     "figures": [{"id": str, "file": str (next to results.json), "caption": str}],
     "targets": [{"target": str, "result": "met" | "not met", "value": number | null}]}

Cells are str, int, float or null. Intervals over seeds come from :func:`bootstrap_interval`.
"""

import datetime
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

RESULTS_FILE = "results.json"
TARGET_RESULTS = ("met", "not met")


def bootstrap_interval(
    values: ArrayLike, *, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lower, upper): the mean of ``values`` and its percentile bootstrap interval.

    Formula: draw B resamples of the n values with replacement, m_b = mean of resample b; the
    interval is the (1 - level)/2 and (1 + level)/2 quantiles of {m_b} (Efron & Tibshirani, "An
    Introduction to the Bootstrap", 1993, ch. 13). NaN values are dropped first; with one value
    the interval is that value, with none everything is NaN. Seeded: the same values give the
    same interval.

    Args:
        values: the n values (e.g. one per seed), any shape (flattened); NaN and inf dropped.
        level: the interval's coverage, in (0, 1); default 0.95.
        resamples: B, the number of bootstrap resamples (>= 1); default 10000.
        seed: the numpy generator's seed; default 0.

    Returns:
        ``(mean, lower, upper)`` floats; all three NaN when no finite value remains.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    x = np.asarray(values, np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lower, upper = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return mean, float(lower), float(upper)


def _check_cell(cell, where: str):
    if cell is None or isinstance(cell, str | int):
        return cell
    if isinstance(cell, float | np.floating):
        return float(cell) if math.isfinite(cell) else None
    if isinstance(cell, np.integer):
        return int(cell)
    raise TypeError(f"{where}: cell {cell!r} is a {type(cell).__name__}, not str/int/float/None")


def table(
    table_id: str,
    title: str,
    header: Iterable[object],
    rows: Iterable[Iterable[object]],
    notes: str = "",
) -> dict:
    """One checked table entry of results.json (every row as long as the header; non-finite
    floats stored as null).

    Args:
        table_id: the table's id, unique within its results.json (embeds name it).
        title: the heading the report gives it.
        header: the column names (written with ``str``).
        rows: the rows, each a cell per column; cells are str, int, float (numpy scalars
            too) or None (``TypeError`` otherwise, ``ValueError`` for a wrong length).
        notes: Markdown text shown under the table; "" for none.

    Returns:
        ``{"id", "title", "header", "rows"}`` plus ``"notes"`` when given.
    """
    header = [str(h) for h in header]
    checked = []
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(header):
            raise ValueError(
                f"table {table_id!r} row {i} has {len(row)} cells, header has {len(header)}"
            )
        checked.append([_check_cell(c, f"table {table_id!r} row {i}") for c in row])
    entry = {"id": table_id, "title": title, "header": header, "rows": checked}
    if notes:
        entry["notes"] = notes
    return entry


def figure(figure_id: str, file: str, caption: str) -> dict:
    """One figure entry of results.json (``file``: a PNG next to results.json).

    Args:
        figure_id: the figure's id.
        file: the image's path relative to the run directory.
        caption: the text shown under it.

    Returns:
        ``{"id", "file", "caption"}``.
    """
    return {"id": figure_id, "file": str(file), "caption": caption}


def target(text: str, met: bool, value: float | None = None) -> dict:
    """One target entry of results.json: what was asked, whether it was met, the measured value.

    Args:
        text: the target, as a sentence.
        met: whether the run met it.
        value: the measured value (int kept, else converted to float; non-finite stored as
            null); None for none.

    Returns:
        ``{"target", "result" ("met" or "not met"), "value"}``.
    """
    if value is not None and not isinstance(value, int | np.integer):
        value = float(value)
    value = _check_cell(value, f"target {text!r}")
    return {"target": text, "result": TARGET_RESULTS[0 if met else 1], "value": value}


def write_results(
    run_dir: str | Path,
    *,
    experiment: str,
    name: str,
    tables: Sequence[dict] = (),
    figures: Sequence[dict] = (),
    targets: Sequence[dict] = (),
) -> Path:
    """Write ``<run_dir>/results.json`` (entries made by :func:`table`, :func:`figure`,
    :func:`target`); figures must exist next to it. Returns the file's path.

    Args:
        run_dir: the run directory (must exist).
        experiment: the experiment family that produced the run.
        name: the report's name (its directory under ``docs/results/``).
        tables: :func:`table` entries, ids unique (``ValueError`` otherwise).
        figures: :func:`figure` entries whose files exist (``FileNotFoundError`` otherwise).
        targets: :func:`target` entries.

    Returns:
        The path of the written results.json.
    """
    run_dir = Path(run_dir)
    for fig in figures:
        if not (run_dir / fig["file"]).is_file():
            raise FileNotFoundError(f"figure {fig['id']!r}: {run_dir / fig['file']} not found")
    ids = [t["id"] for t in tables]
    if len(set(ids)) != len(ids):
        raise ValueError(f"table ids repeat: {ids}")
    doc = {
        "experiment": experiment,
        "name": name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tables": list(tables),
        "figures": list(figures),
        "targets": list(targets),
    }
    path = run_dir / RESULTS_FILE
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def read_results(path: str | Path) -> dict:
    """A results.json (or the one in a run directory), with its keys checked.

    Args:
        path: a results.json file, or a directory holding one (``FileNotFoundError`` if
            neither).

    Returns:
        The parsed document (``ValueError`` when it lacks experiment, name or tables).
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the experiment first")
    doc = json.loads(path.read_text())
    missing = [k for k in ("experiment", "name", "tables") if k not in doc]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    return doc
