"""The short interventions sweep on SmolLM2-135M (slow: 4 methods x 30 GRPO steps on CPU)."""

from pathlib import Path

import numpy as np
import pytest

from entropix import config as cfg
from entropix.results import read_results
from experiments import interventions

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smollm2_sweep_reports_whether_the_tiny_ordering_holds(tmp_path):
    """Runs configs/interventions_smollm2.yaml and compares its final-entropy order of the
    methods with the tiny sweep's (docs/results/interventions_collapse_tiny); the verdict is
    the results file's target, printed here, whichever way it goes."""
    reference = ROOT / "docs/results/interventions_collapse_tiny/results.json"
    config = cfg.load(
        str(ROOT / "configs/interventions_smollm2.yaml"),
        [f"reference={reference}"],
        {"interventions": interventions.Config},
    )
    interventions.run(config, tmp_path)
    doc = read_results(tmp_path)
    tables = {t["id"]: t for t in doc["tables"]}
    assert [row[0] for row in tables["ordering"]["rows"]] == list(config.methods)
    (verdict,) = [t for t in doc["targets"] if "same order" in t["target"]]
    assert np.isfinite(verdict["value"]) and -1.0 <= verdict["value"] <= 1.0
    print(f"\n{verdict['target']}: {verdict['result']} (tau = {verdict['value']:.3f})")
