import json
import subprocess
import sys

import numpy as np

from entropix.cli import main


def test_measure_reports_agreeing_paths_and_memory(capsys):
    code = main(
        ["measure", "--tokens", "64", "--dim", "16", "--vocab", "3000", "--chunk", "256", "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["paths_agree"]
    assert 0 < report["entropy_min"] <= report["entropy_mean"] <= report["entropy_max"]
    assert report["entropy_max"] <= np.log(3000) + 1e-4
    assert report["memory_ratio"] > 1


def test_cli_entry_point_and_error_message():
    out = subprocess.run(
        [sys.executable, "-m", "entropix.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "measure" in out
    bad = subprocess.run(
        [sys.executable, "-m", "entropix.cli", "measure", "--chunk", "0"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert (
        bad.stderr.strip().splitlines()[-1] == "entropix measure: error: chunk must be > 0; got 0"
    )
