"""The interventions sweep's tables and figures from finished sub-runs (fake metrics: no
training)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import experiments
from entropix import config as cfg
from entropix.config import MethodSpec
from entropix.report import render
from entropix.results import bootstrap_interval, read_results
from entropix.rl import LossConfig
from experiments import grpo, interventions
from experiments.reporting import interval_cell

STEPS, SEEDS = 20, (0, 1, 2)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _config():
    base = grpo.Config()
    train = base.train.__class__(steps=STEPS, eval_samples=8, eval_k=(1, 8))
    methods = {
        "baseline": interventions.Method(),
        "entropy_bonus": interventions.Method(
            loss=LossConfig(terms=(MethodSpec("ppo_clip"), MethodSpec("entropy_bonus")))
        ),
    }
    return interventions.Config(
        name="fake_sweep", base=grpo.Config(train=train), methods=methods, seeds=SEEDS
    )


def _write(run_dir, entropy, reward, evals):
    """metrics.jsonl of a finished run: an eval record at step 0, steps 1..STEPS, the last eval
    joining the last step's record (as the trainer writes them)."""
    run_dir.mkdir(parents=True)
    rows = [{"step": 0, "eval/accuracy": 0.1, "eval/pass@1": 0.1, "eval/pass@8": 0.2}]
    for t in range(STEPS):
        rows.append({"step": t + 1, "entropy": entropy[t], "reward": reward[t]})
    rows[-1] |= evals
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


# baseline seed s: entropy 1.0 for the first 5 + 2s steps, then 0.2 (collapse step 6 + 2s);
# entropy_bonus: entropy stays at 0.9 / 0.8 (never below half of H0)
COLLAPSE = {s: 6 + 2 * s for s in SEEDS}
FINAL_REWARD = {("baseline", s): 0.9 - 0.05 * s for s in SEEDS}
FINAL_REWARD |= {("entropy_bonus", s): 0.6 + 0.1 * s for s in SEEDS}


@pytest.fixture
def sweep(tmp_path):
    for s in SEEDS:
        entropy = np.where(np.arange(1, STEPS + 1) < COLLAPSE[s], 1.0, 0.2)
        reward = np.full(STEPS, FINAL_REWARD["baseline", s])
        evals = {"eval/accuracy": 0.8, "eval/pass@1": 0.7 + 0.1 * s, "eval/pass@8": 0.9}
        _write(tmp_path / f"baseline_seed{s}", entropy, reward, evals)
        entropy = np.where(np.arange(STEPS) % 2 == 0, 0.9, 0.8)
        reward = np.full(STEPS, FINAL_REWARD["entropy_bonus", s])
        evals = {"eval/accuracy": 0.5, "eval/pass@1": 0.4, "eval/pass@8": 0.95}
        _write(tmp_path / f"entropy_bonus_seed{s}", entropy, reward, evals)
    return tmp_path


def test_tables_give_means_and_intervals_over_seeds(sweep):
    config = _config()
    summary = interventions.run(config, sweep)  # every sub-run finished: nothing is trained
    assert summary["baseline"]["collapsed"] == 1.0 and summary["entropy_bonus"]["collapsed"] == 0
    doc = read_results(sweep)
    methods, seeds = doc["tables"]
    assert methods["header"] == [
        "method", "collapsed", "collapse step", "final reward", "final entropy",
        "H_final / H0", "greedy acc", "pass@1", "pass@8",
    ]  # fmt: skip
    base, bonus = methods["rows"]
    rewards = [FINAL_REWARD["baseline", s] for s in SEEDS]
    mean, lo, hi = bootstrap_interval(rewards)
    assert mean == pytest.approx(np.mean(rewards))
    assert base[:4] == ["baseline", "3/3", interval_cell(COLLAPSE.values(), 0),
                        f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"]  # fmt: skip
    assert base[4].startswith("0.200 [0.200, 0.200]")  # last 10 steps of every seed at 0.2
    assert base[5] == interval_cell([0.2 / 1.0] * 3)  # H0: the first 5 steps, all at 1.0
    assert base[7] == interval_cell([0.7, 0.8, 0.9]) and base[8] == "0.900 [0.900, 0.900]"
    assert bonus[1:3] == ["0/3", "-"]
    assert bonus[5] == interval_cell([0.85 / 0.86] * 3)  # mean of 0.9/0.8 over 10 vs 5 steps
    assert len(seeds["rows"]) == 6 and seeds["rows"][0][:3] == ["baseline", 0, COLLAPSE[0]]
    assert seeds["rows"][3][:3] == ["entropy_bonus", 0, None]
    assert doc["targets"] == [
        {"target": "the baseline collapses in every seed", "result": "met", "value": 1.0}
    ]
    for fig in doc["figures"]:
        assert (sweep / fig["file"]).stat().st_size > 0
    assert (sweep / "results.md").read_text() == render(doc)


def test_only_unfinished_sub_runs_are_run(sweep):
    assert interventions.finished(sweep / "baseline_seed0", STEPS)
    assert not interventions.finished(sweep / "baseline_seed0", STEPS + 1)
    assert not interventions.finished(sweep / "missing", STEPS)


def test_interval_cell_edge_cases():
    assert interval_cell([]) == "-" and interval_cell([None, float("nan")]) == "-"
    assert interval_cell([0.25]) == "0.250"
    assert interval_cell([10, 20], digits=0).startswith("15 [")


def test_kendall_tau_counts_concordant_pairs():
    x, y = [3.0, 1.0, 2.0, 0.5], [0.3, 0.2, 0.1, 0.0]
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    agree = sum(np.sign(x[i] - x[j]) == np.sign(y[i] - y[j]) for i, j in pairs)
    assert interventions.kendall_tau(x, y) == pytest.approx((2 * agree - len(pairs)) / len(pairs))
    assert interventions.kendall_tau(x, x) == 1.0 and np.isnan(interventions.kendall_tau([1], [1]))


def test_ordering_against_a_reference_sweep(sweep, tmp_path_factory):
    reference = tmp_path_factory.mktemp("reference")
    rows = [["baseline", 0, None, 0.1, 0.9], ["entropy_bonus", 0, None, 0.5, 0.4],
            ["entropy_bonus", 1, None, 0.7, 0.4], ["clip_higher", 0, None, 0.3, 0.8]]  # fmt: skip
    doc = {
        "experiment": "interventions",
        "name": "tiny",
        "tables": [{"id": "seeds", "title": "", "rows": rows,
                    "header": ["method", "seed", "collapse step", "final entropy", "x"]}],
    }  # fmt: skip
    (reference / "results.json").write_text(json.dumps(doc))
    config = dataclasses.replace(_config(), reference=str(reference / "results.json"))
    interventions.run(config, sweep)
    tables = {t["id"]: t for t in read_results(sweep)["tables"]}
    # here: entropy_bonus 0.85 > baseline 0.2; reference: entropy_bonus 0.6 > baseline 0.1
    assert tables["ordering"]["rows"] == [
        ["baseline", pytest.approx(0.2), 2, 0.1, 2],
        ["entropy_bonus", pytest.approx(0.85), 1, pytest.approx(0.6), 1],
    ]
    assert read_results(sweep)["targets"][0]["result"] == "met"
    with pytest.raises(ValueError, match="need 2 methods"):
        interventions.ordering({"baseline": [{"final_entropy": 0.1}]}, doc)


def test_collapse_sweep_runs_every_method_on_the_collapse_setup():
    sweep = cfg.load(str(CONFIGS / "interventions_collapse_tiny.yaml"), [], experiments.schemas())
    collapse = cfg.load(str(CONFIGS / "collapse_tiny.yaml"), [], experiments.schemas())
    assert list(sweep.methods) == [
        "baseline", "entropy_bonus", "adaptive_entropy", "clip_higher", "clip_cov", "kl_cov",
        "forking_tokens", "siren", "lp_reg", "aepo", "steer", "bapo", "gtpo", "hapo",
    ]  # fmt: skip
    assert len(sweep.seeds) >= 3
    for section in ("task", "model", "sft", "rollout", "update", "optim"):
        assert getattr(sweep.base, section) == getattr(collapse, section), section
    assert sweep.methods["baseline"].loss == collapse.loss
    assert sweep.base.train.eval_samples >= 8 and 8 in sweep.base.train.eval_k
