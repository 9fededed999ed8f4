import json
import os
from pathlib import Path

import numpy as np
import pytest

from entropix.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a normal run prints no numpy warning
def test_run_plot_compare_list_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "bandit"
    argv = [
        "run",
        str(CONFIGS / "dynamics_bandit.yaml"),
        "bandit.steps=30",
        "bandit.seeds=2",
        "--run-dir",
        str(run_dir),
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["run_dir"] == str(run_dir) and out["bandit_corr"] > 0.99
    assert (run_dir / "config.yaml").is_file() and (run_dir / "summary.json").is_file()
    assert (run_dir / "plots" / "curves.png").is_file()
    saved = (run_dir / "config.yaml").read_text()
    assert "steps: 30" in saved and f"run_dir: {run_dir}" in saved
    assert main(["plot", str(run_dir)]) == 0
    assert "entropy_change.png" in capsys.readouterr().out
    assert main(["compare", str(run_dir), str(run_dir)]) == 0
    table = capsys.readouterr().out
    assert table.count("| bandit |") == 2 and "final reward" in table
    assert main(["list", "--configs-dir", str(CONFIGS)]) == 0
    listing = capsys.readouterr().out
    assert "interventions" in listing and "kl_cov" in listing
    assert "grpo_addition_tiny.yaml" in listing


def test_rerun_notes_changed_keys(tmp_path, capsys):
    argv = [
        "run",
        str(CONFIGS / "dynamics_bandit.yaml"),
        "bandit.steps=5",
        "bandit.seeds=1",
        "--run-dir",
        str(tmp_path),
        "--no-plot",
    ]
    assert main(argv) == 0
    # flags and overrides in any order
    mixed = ["run", argv[1], "--run-dir", str(tmp_path), "bandit.steps=5", "--no-plot"]
    assert main([*mixed, "bandit.seeds=1", "bandit.lr=0.1"]) == 0
    assert "changed keys: bandit.lr" in capsys.readouterr().err


def test_config_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["run", str(CONFIGS / "grpo_addition_tiny.yaml"), "optim.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("entropix run: error:") and "did you mean 'lr'" in err
    assert "\n" not in err
    assert main(["run", str(CONFIGS / "grpo_addition_tiny.yml")]) == 2
    err = capsys.readouterr().err
    assert "did you mean" in err and "grpo_addition_tiny.yaml'?" in err
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_metrics_table_reads_the_training_layers_log(tmp_path):
    from entropix.runs import METRICS_FILE, find_runs, metrics_table
    from entropix.train import MetricsLogger
    from entropix.train.metrics import METRICS_FILE as TRAIN_METRICS_FILE

    assert METRICS_FILE == TRAIN_METRICS_FILE
    logger = MetricsLogger(tmp_path / "run", tensorboard=False, stream=open(os.devnull, "w"))  # noqa: SIM115
    logger.log(1, {"entropy": 1.5})
    logger.log(2, {"entropy": float("nan"), "reward": 0.25})
    logger.close()
    with (tmp_path / "run" / METRICS_FILE).open("a") as f:
        f.write('{"step": 3, "entr')  # a line torn by a killed process
    assert find_runs(tmp_path / "run") == {"run": tmp_path / "run"}
    table = metrics_table(tmp_path / "run")
    np.testing.assert_array_equal(table["step"], [1, 2])
    np.testing.assert_array_equal(table["entropy"], [1.5, np.nan])
    np.testing.assert_array_equal(table["reward"], [np.nan, 0.25])
