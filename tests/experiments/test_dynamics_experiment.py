import dataclasses
import json

import jax
import numpy as np
import pytest

from entropix.plots import plot_run
from entropix.results import read_results
from entropix.runs import comparison_table as table
from experiments.dynamics import (
    BanditConfig,
    Config,
    run,
    run_bandit,
    run_bandit_seeds,
    seed_targets,
)


def test_vmapped_seeds_equal_python_loop():
    config = BanditConfig(arms=5, steps=30, seeds=3)
    batched = run_bandit_seeds(jax.random.key(1), config)
    keys = jax.random.split(jax.random.key(1), 3)
    for i in range(3):
        single = run_bandit(keys[i], config)
        for name, values in single.items():
            np.testing.assert_allclose(batched[name][i], values, rtol=1e-5, atol=1e-7)


def test_bandit_prediction_tracks_exact_change_and_entropy_falls():
    curves = run_bandit_seeds(jax.random.key(0), BanditConfig(arms=6, steps=60, lr=0.2, seeds=4))
    pred, meas = np.asarray(curves["dH/predicted"]), np.asarray(curves["dH/measured"])
    assert np.corrcoef(pred.ravel(), meas.ravel())[0, 1] > 0.99
    entropy, reward = np.asarray(curves["entropy"]), np.asarray(curves["reward"])
    assert (reward[:, -1] > reward[:, 0]).all()  # exact small-step PG improves every seed
    assert entropy[:, -1].mean() < entropy[:, 0].mean()  # (a rare best arm can raise H first)


def test_smoke_run_writes_metrics_tables_and_plots(tmp_path):
    config = Config(name="t", bandit=BanditConfig(arms=5, steps=40, lr=0.5, seeds=2))
    summary = run(config, tmp_path)
    assert summary["bandit_corr"] > 0.99 and summary["bandit_rel_error"] < 0.2
    assert summary["bandit_ceiling"] <= 1.0 + 1e-3  # rewards are in [0, 1]
    rows = [json.loads(line) for line in (tmp_path / "bandit" / "metrics.jsonl").open()]
    assert len(rows) == 40 and rows[0]["step"] == 1 and rows[-1]["entropy"] < rows[0]["entropy"]
    assert "bandit_corr" in (tmp_path / "results.md").read_text()
    written = plot_run(tmp_path)
    assert {p.name for p in written} == {"curves.png", "entropy_change.png", "entropy_law.png"}
    assert "| bandit |" in table([tmp_path])


def _grpo(**changes):
    from entropix import config as cfg
    from experiments import grpo
    from tests.rl import tiny

    data = {k: dict(v) for k, v in tiny.BASE.items()}
    data["train"]["steps"] = 4
    data["dynamics"] = {"every": 1, "second_order": True}
    data["task"] = {"digits": 1}
    data["sft"] = {
        "steps": 100,
        "batch_size": 32,
        "lr": 1e-2,
    }  # some replies right: reward variance
    return dataclasses.replace(cfg.from_data(grpo.Config, data, (), source="test"), **changes)


def test_grpo_seeds_table_gives_each_seed_and_the_mean(tmp_path):
    bandit = BanditConfig(arms=4, steps=10, seeds=2)
    config = Config(name="t", bandit=bandit, grpo=_grpo(name="g"), grpo_seeds=(3,))
    summary = run(config, tmp_path)
    tables = {t["id"]: t for t in read_results(tmp_path / "results.json")["tables"]}
    seeds, residuals = tables["seeds"], tables["residuals"]
    assert [row[0] for row in seeds["rows"]] == [0, 3, "mean", "95% interval"]
    assert [row[0] for row in residuals["rows"]] == [0, 3]
    column = seeds["header"].index("dH/predicted/corr")
    corr = []
    for i, directory in enumerate(("grpo", "grpo_seed3")):
        rows = [json.loads(line) for line in (tmp_path / directory / "metrics.jsonl").open()]
        rows = [r for r in rows if "dH/predicted" in r]
        assert len(rows) == 4
        pred, meas = (np.array([r[k] for r in rows]) for k in ("dH/predicted", "dH/measured"))
        corr.append(np.corrcoef(pred, meas)[0, 1])
        worst = int(np.argmax((meas - pred) ** 2))  # the residuals table names that step
        want = [rows[worst]["step"], rows[worst]["dlogp/max"]]
        got = dict(zip(residuals["header"], residuals["rows"][i], strict=True))
        assert [got["dH/residual/worst_step"], got["dlogp/max/at_worst"]] == pytest.approx(want)
        small = [r["dlogp/max"] <= 1.0 for r in rows]  # the small-step columns' steps
        assert got["dH/small_steps/steps"] == sum(small)
        second = np.array([r["dH/second_order"] for r in rows])
        assert got["dH/second_order/corr"] == pytest.approx(np.corrcoef(second, meas)[0, 1])
    assert [seeds["rows"][i][column] for i in (0, 1)] == pytest.approx(corr, abs=1e-6)
    assert seeds["rows"][2][column] == pytest.approx(np.mean(corr), abs=1e-6)
    assert "GRPO corr >= 0.95 on every one of 2 seeds" in summary["targets"]


def test_grpo_seeds_refuse_the_first_seed_again(tmp_path):
    config = Config(name="t", bandit=BanditConfig(arms=4, steps=5, seeds=1), grpo=_grpo(seed=2))
    with pytest.raises(ValueError, match=r"grpo_seeds: \[2\] repeats a seed"):
        run(dataclasses.replace(config, grpo_seeds=(2,)), tmp_path)


def test_seed_targets_fail_on_a_nan_seed_wherever_it_is():
    for corr in ([0.97, np.nan], [np.nan, 0.97]):
        met = {text: ok for text, _, ok in seed_targets(corr, [0.1, 0.1])}
        assert met == {
            "GRPO corr >= 0.95 on every one of 2 seeds": False,
            "GRPO corr >= 0.95, mean over 2 seeds": False,
            "GRPO median rel error <= 0.2 on every one of 2 seeds": True,
        }
    checks = seed_targets([0.97, 0.96], [0.1, 0.25])
    assert [(value, ok) for _, value, ok in checks] == [(0.96, True), (0.965, True), (0.25, False)]
