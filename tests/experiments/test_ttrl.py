"""The test-time RL experiment: its config builds every method on the RL trainer, and its table
comes from the finished sub-runs (fake metrics: no training)."""

import json
from pathlib import Path

import experiments
from entropix import config as cfg
from entropix import rl
from entropix.results import read_results
from experiments import grpo, ttrl

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ttrl_addition_tiny.yaml"


def _config(*overrides):
    return cfg.load(CONFIG, list(overrides), experiments.schemas())


def test_every_method_of_the_config_builds_and_only_grpo_reads_labels():
    config = _config()
    assert set(config.methods) == {"grpo_labels", "ttrl", "evol_rl", "ettrl", "spine"}
    for name in config.methods:
        plan = rl.build(ttrl.method_config(config, name, 0))
        assert plan.update.advantages.answers == (name != "grpo_labels")
        assert ttrl.label_free(config.methods[name].loss) == (name != "grpo_labels")
    assert config.methods["ettrl"].strategy.name == "ettrl_tree"


def test_table_from_finished_sub_runs(tmp_path, monkeypatch):
    config = _config("base.train.steps=3")
    tokens = {"grpo_labels": 100, "ttrl": 101, "evol_rl": 102, "ettrl": 70, "spine": 103}

    def fake_run(base, run_dir, *, sft_dir):
        assert sft_dir == tmp_path / "sft_seed0"
        rows = [{"step": 0, "eval/accuracy": 0.4, "eval/maj@8": 0.5}]
        for t in range(1, 4):
            rows.append(
                {
                    "step": t,
                    "rollout/tokens": tokens[base.name] + t,
                    "accuracy": 0.3,
                    "entropy": 0.5,
                }
            )
        rows[-1] |= {"eval/accuracy": 0.2, "eval/maj@8": 0.25}
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    monkeypatch.setattr(grpo, "run", fake_run)
    summary = ttrl.run(config, tmp_path)
    doc = read_results(tmp_path)
    assert doc["experiment"] == "ttrl" and doc["name"] == "ttrl_addition_tiny"
    (table,) = doc["tables"]
    header, rows = table["header"], {row[0]: row for row in table["rows"]}
    assert header[4:8] == [
        "held-out acc (before RL)",
        "held-out acc (final)",
        "held-out maj@8 (before RL)",
        "held-out maj@8 (final)",
    ]
    for name, row in rows.items():
        assert row[2] == ("yes" if name == "grpo_labels" else "no")
        assert row[4:8] == [0.4, 0.2, 0.5, 0.25]
        assert row[header.index("rollout tokens")] == 3 * tokens[name] + 6
    assert rows["ettrl"][3] == "ettrl_tree" and rows["ttrl"][3] == "sample"
    assert summary["ettrl"][0]["tokens_per_step"] == tokens["ettrl"] + 2
