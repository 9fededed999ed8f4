"""results.json files and the bootstrap interval their tables report."""

import json
import math

import numpy as np
import pytest

from entropix.results import (
    bootstrap_interval,
    figure,
    read_results,
    table,
    target,
    write_results,
)


def test_bootstrap_interval_matches_a_loop_written_from_the_definition():
    values = [0.2, 0.5, 0.9, 0.4, 0.7]
    mean, lo, hi = bootstrap_interval(values, resamples=2000, seed=3)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 5, size=(2000, 5))
    means = [np.mean([values[j] for j in row]) for row in idx]
    assert mean == pytest.approx(np.mean(values))
    assert lo == pytest.approx(np.percentile(means, 2.5))
    assert hi == pytest.approx(np.percentile(means, 97.5))
    assert min(values) <= lo <= mean <= hi <= max(values)


def test_bootstrap_interval_edge_cases_and_bad_input():
    assert bootstrap_interval([0.3]) == (0.3, 0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_interval([float("nan")]))
    assert bootstrap_interval([1.0, float("nan"), 1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1.0, 2.0], level=1.5)


def test_results_round_trip_and_checks(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    t = table(
        "final",
        "Final values",
        ["method", "reward"],
        [["baseline", np.float32(0.5)], ["bonus", float("nan")]],
    )
    path = write_results(
        tmp_path,
        experiment="interventions",
        name="x",
        tables=[t],
        figures=[figure("curves", "a.png", "entropy")],
        targets=[target("reward >= 0.4", True, 0.5)],
    )
    doc = read_results(tmp_path)
    assert doc == json.loads(path.read_text())
    assert doc["tables"][0]["rows"] == [["baseline", 0.5], ["bonus", None]]
    assert doc["targets"][0] == {"target": "reward >= 0.4", "result": "met", "value": 0.5}
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        table("t", "t", ["a", "b"], [[1]])
    with pytest.raises(TypeError, match="not str/int/float/None"):
        table("t", "t", ["a"], [[[1, 2]]])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_results(tmp_path, experiment="e", name="n", figures=[figure("f", "missing.png", "")])
    with pytest.raises(FileNotFoundError, match="run the experiment first"):
        read_results(tmp_path / "nothing")
