import json
from pathlib import Path

import numpy as np

from entropix import config as cfg
from experiments import attention_collapse, interventions

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_attention_collapse_smoke_baseline_collapses_sigma_reparam_does_not(tmp_path):
    config = attention_collapse.Config(steps=40, batch_size=16, log_every=5, sentences=300)
    summary = attention_collapse.run(config, tmp_path)
    base, sigma = summary["baseline"], summary["sigma_reparam"]
    assert base["final_attention_entropy"] < sigma["final_attention_entropy"]
    assert 0.0 <= base["min_attention_entropy"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "baseline" / "metrics.jsonl").open()]
    assert {"attn/L0H0", "attn/L1H3", "entropy", "loss"} <= set(rows[0])
    assert (tmp_path / "plots" / "attention_heads.png").stat().st_size > 0
    assert "| sigma_reparam |" in (tmp_path / "results.md").read_text()


def test_interventions_sweep_smoke_shares_sft_and_writes_table(tmp_path):
    config = cfg.load(
        str(CONFIGS / "interventions_addition_tiny.yaml"),
        [
            "base.sft.steps=20",
            "base.train.steps=2",
            "base.rollout.prompts=2",
            "base.rollout.group_size=4",
            "base.train.eval_prompts=16",
        ],
        {"interventions": interventions.Config},
    )
    assert list(config.methods)[:3] == ["baseline", "entropy_bonus", "clip_higher"]
    small = {k: config.methods[k] for k in ("baseline", "forking_tokens")}
    summary = interventions.run(interventions.Config(base=config.base, methods=small), tmp_path)
    assert set(summary) == set(small)
    assert all(np.isfinite(v["final_entropy"]) for v in summary.values())
    assert (tmp_path / "sft_seed0" / "metrics.jsonl").is_file()  # the SFT stage ran once,
    assert not any((tmp_path / f"{m}_seed0" / "sft").exists() for m in small)  # shared by both
    table = (tmp_path / "results.md").read_text()
    assert "| forking_tokens | 0 |" in table and "collapsed" in table
