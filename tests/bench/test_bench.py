"""`entropix bench --suite all --quick` end to end so the harness cannot rot; no timing asserts."""

import json
import math

import pytest

from entropix.bench import report
from entropix.bench.suites import SUITES
from entropix.bench.timing import Timing, paired_difference, paired_ratio, time_calls
from entropix.cli import main


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--suite", "all", "--quick", "--out", str(out)]) == 0
    assert (out / "results.md").is_file()
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_results_have_environment_and_every_suite(results):
    data, md = results
    env = data["environment"]
    assert env["device_kind"] and env["jax_version"] and env["platform"]
    assert data["quick"] is True
    assert list(data["suites"]) == list(SUITES)
    for suite in SUITES:
        assert f"## {suite}" in md
        assert data["suites"][suite], f"suite {suite} has no rows"


def test_rows_are_measured_or_say_why_not(results):
    data, _ = results
    for suite, rows in data["suites"].items():
        for r in rows:
            if r["status"] == "not available":
                assert r["reason"], (suite, r["case"])
                continue
            assert r["status"] == "ok"
            assert r["ratios"], (suite, r["case"])
            for name, ratio in r["ratios"].items():
                assert math.isfinite(ratio) and ratio > 0, (suite, r["case"], name, ratio)
            assert all(isinstance(met, bool) for met in r["targets"].values())


def test_core_suites_measure_their_figures(results):
    data, _ = results
    entropy = data["suites"]["entropy"]
    modes = {r["case"].split(" ", 1)[1] for r in entropy}
    assert modes == {"forward", "forward+backward"}
    for r in entropy:
        assert set(r["ratios"]) == {"time_fused/naive", "temp_mem_naive/fused"}
        for path in ("fused", "naive"):
            timing = r["values"][path]
            assert timing["runs"] >= 5 and timing["min_s"] <= timing["median_s"] <= timing["max_s"]
    *bandit, grpo = data["suites"]["scaling"]
    assert [set(r["ratios"]) for r in bandit] == [{"speedup_loop/vmap"}] * len(bandit) != []
    assert grpo["case"] == "grpo 8 seeds"
    assert set(grpo["ratios"]) == {"speedup_loop/vmap", "ceiling_loop/batched"}
    assert grpo["values"]["batched_rows"] == 8 * grpo["values"]["rows_per_step"]
    assert grpo["values"]["batched"]["runs"] >= 5
    for r in data["suites"]["loss"]:
        assert r["status"] != "ok" or set(r["ratios"]) == {"time/ppo_clip"}
        # only registry entries that are not losses are skipped (every loss gets its controls)
        assert r["status"] == "ok" or r["reason"].startswith("kind="), r
    for r in data["suites"]["rollout"]:
        assert r["status"] != "ok" or set(r["ratios"]) == {"speedup_cache/no_cache"}


def test_rl_suite_splits_the_grpo_step(results):
    data, _ = results
    rows = {r["case"].split(" ", 1)[0]: r for r in data["suites"]["rl"]}
    assert list(rows) == ["tiny", "small", "smollm2"]
    assert rows["small"]["status"] == rows["smollm2"]["status"] == "not available"  # --quick
    tiny = rows["tiny"]["values"]
    assert tiny["rows"] == 8 and tiny["decode_steps"] >= 1
    parts = tiny["rollout_s"] + tiny["other_s"] + tiny["update_s"]
    assert abs(parts - tiny["step_s"]) < 1e-9 and abs(sum(tiny["shares"].values()) - 1) < 1e-9
    assert 0 < rows["tiny"]["ratios"]["mfu"] and tiny["model_gflop"]["update"] > 0
    ratios = rows["tiny"]["ratios"]
    variants = ("stride8", "second_order")
    assert {"time_logged/unlogged", *(f"time_logged/unlogged_{v}" for v in variants)} <= set(ratios)
    assert tiny["probed_update"]["runs"] >= 5 and tiny["dynamics_row_strides"] == [8]
    step = tiny["step_s"]
    assert ratios["time_logged/unlogged"] == pytest.approx((step + tiny["probe_s"]) / step)
    for variant in variants:
        assert tiny[f"probed_update_{variant}"]["runs"] >= 5
        assert ratios[f"time_logged/unlogged_{variant}"] == pytest.approx(
            (step + tiny[f"probe_{variant}_s"]) / step
        )
    assert rows["tiny"]["targets"] == {}  # the dynamics cost target is the small preset's


def test_train_suite_measures_mfu_and_diagnostics_overhead(results):
    data, _ = results
    rows = {r["case"].split(" ", 1)[0]: r for r in data["suites"]["train"]}
    assert set(rows) == {"tiny", "small"}
    tiny = rows["tiny"]
    assert tiny["status"] == "ok", tiny.get("reason")
    assert set(tiny["ratios"]) == {"mfu", "overhead_diagnostics/none"}
    values = tiny["values"]
    assert values["peak_gflop_per_s"] > 0 and values["model_gflop_per_step"] > 0
    assert values["peak_alone"]["runs"] >= 5 and values["peak"]["runs"] >= 5
    assert "dynamics/predicted_dH" in values["diagnostic_metrics"]
    assert "attention_entropy/mean" in values["diagnostic_metrics"]
    assert rows["small"]["status"] == "not available"


def test_time_calls_rejects_fewer_than_five_runs():
    with pytest.raises(ValueError, match=">= 5"):
        time_calls([lambda: 0], repeats=4)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    a = Timing(2.0, 1.0, 9.0, 5, (1.0, 2.0, 9.0, 2.0, 3.0))
    b = Timing(1.0, 0.5, 9.0, 5, (0.5, 1.0, 9.0, 1.0, 1.0))  # a burst of load in round 3
    assert paired_ratio(a, b) == 2.0  # per round: 2, 2, 1, 2, 3
    assert a.median / b.median == 2.0 and a.min / b.min == 2.0
    timings = time_calls([lambda: 0, lambda: 1], repeats=5)
    assert all(len(t.samples) == 5 and t.median in t.samples for t in timings)
    with pytest.raises(ValueError, match="same time_calls run"):
        paired_ratio(a, Timing(1.0, 1.0, 1.0, 1, (1.0,)))
    assert paired_difference(a, b) == 1.0  # per round: 0.5, 1, 0, 1, 2
    with pytest.raises(ValueError, match="paired_difference needs two Timings"):
        paired_difference(a, Timing(1.0, 1.0, 1.0, 1, (1.0,)))


def test_markdown_reports_unavailable_reason_and_target_verdicts():
    suites = {
        "demo": [
            report.row("a", {"x/y": 2.0}, {}, {"x <= 3y": True, "x >= 5y": False}),
            report.unavailable("b", "layer | missing"),
        ]
    }
    md = report.markdown(
        {"environment": report.environment(), "created": "now", "quick": True, "suites": suites}
    )
    assert "x <= 3y: met" in md and "x >= 5y: not met" in md
    assert "not available: layer / missing" in md
