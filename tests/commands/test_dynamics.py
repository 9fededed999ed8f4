import json

import numpy as np
import pytest

from entropix.cli import main
from entropix.dynamics import ceiling_interval, fit_entropy_performance
from entropix.runs import PARTITIONS, dynamics_table, metrics_table, paired
from tests.commands.conftest import write_run


def test_dynamics_table_against_numpy(synthetic_run):
    table = metrics_table(synthetic_run)
    rows = dynamics_table(table)
    _, pred, meas = paired(table, "dH/predicted", "dH/measured")
    assert rows["steps"] == len(pred) == 12
    np.testing.assert_allclose(rows["dH/predicted/corr"], np.corrcoef(pred, meas)[0, 1])
    r2 = 1 - np.sum((meas - pred) ** 2) / np.sum((meas - meas.mean()) ** 2)
    np.testing.assert_allclose(rows["dH/predicted/r2_identity"], r2)
    slope, intercept = np.polyfit(pred, meas, 1)
    line = 1 - np.sum((meas - slope * pred - intercept) ** 2) / np.sum((meas - meas.mean()) ** 2)
    np.testing.assert_allclose(rows["dH/predicted/r2_line"], line)
    rel = np.median(np.abs(pred - meas) / np.abs(meas))
    np.testing.assert_allclose(rows["dH/predicted/median_rel_error"], rel)
    corr = np.corrcoef(0.9 * pred, meas)[0, 1]  # dH/logit_law = 0.9 * predicted
    np.testing.assert_allclose(rows["dH/logit_law/corr"], corr)
    np.testing.assert_allclose(
        rows["dH/logit_law/median_rel_error"], np.median(np.abs(0.9 * pred - meas) / np.abs(meas))
    )
    assert "dH/sampled_cov/corr" in rows and "dH/sampled_cov/r2_line" not in rows
    for keys in PARTITIONS.values():
        parts = np.stack([paired(table, k, "dH/predicted")[1] for k in keys])
        np.testing.assert_allclose(parts.sum(0), pred, atol=1e-12)  # the groups sum to pred
        shares = np.abs(parts).sum(1) / np.abs(parts).sum()
        for key, mean, share in zip(keys, parts.mean(1), shares, strict=True):
            np.testing.assert_allclose([rows[f"{key}/mean"], rows[f"{key}/share"]], [mean, share])
    np.testing.assert_allclose(rows["dH/pred/forking/share"], 0.7, rtol=1e-6)
    _, h, r = paired(table, "entropy", "reward")
    fit, interval = fit_entropy_performance(h, r), ceiling_interval(h, r)
    assert rows["law/points"] == 24 and rows["law/r2"] == pytest.approx(float(fit.r2))
    assert rows["law/ceiling_lower"] == pytest.approx(float(interval.lower))
    assert rows["law/ceiling_lower"] < rows["law/ceiling"] < rows["law/ceiling_upper"]


def test_residual_rows_name_the_worst_step_and_its_log_prob_move(synthetic_run):
    table = metrics_table(synthetic_run)
    steps, pred, meas = paired(table, "dH/predicted", "dH/measured")
    worst = int(steps[np.argmax((meas - pred) ** 2)])
    row = table["step"] == worst
    table["dH/measured"][row] += 0.05  # a step far off the first order, on the worst step
    rows = dynamics_table(table)
    squared = (table["dH/measured"] - table["dH/predicted"])[np.isin(table["step"], steps)] ** 2
    assert rows["dH/residual/worst_step"] == worst
    np.testing.assert_allclose(rows["dH/residual/worst_share"], squared.max() / squared.sum())
    assert rows["dH/residual/worst_share"] > 0.99
    _, moved = paired(table, "dlogp/max", "dH/predicted")[:2]
    np.testing.assert_allclose(rows["dlogp/max/median"], np.median(moved))
    np.testing.assert_allclose(rows["dlogp/max/at_worst"], 0.1 + worst / 24)
    del table["dlogp/max"]  # a run that did not log it: the dH rows only
    rows = dynamics_table(table)
    assert "dH/residual/worst_step" in rows and "dlogp/max/median" not in rows


def test_small_step_rows_keep_the_steps_inside_the_log_prob_bound(synthetic_run, capsys):
    table = metrics_table(synthetic_run)
    steps, pred, meas = paired(table, "dH/predicted", "dH/measured")
    moved = 0.1 + steps / 24  # the synthetic run's dlogp/max
    table["dH/measured"][table["step"] == 24] += 0.05  # a large miss on a step of 1.1 nats
    meas[steps == 24] += 0.05
    for bound in (0.6, 1.0, 5.0):
        keep = moved <= bound
        rows = dynamics_table(table, dlogp_bound=bound)
        assert rows["dH/small_steps/bound"] == bound
        assert rows["dH/small_steps/steps"] == keep.sum()
        np.testing.assert_allclose(
            rows["dH/small_steps/corr"], np.corrcoef(pred[keep], meas[keep])[0, 1]
        )
        rel = np.median(np.abs(pred[keep] - meas[keep]) / np.abs(meas[keep]))
        np.testing.assert_allclose(rows["dH/small_steps/median_rel_error"], rel)
    small = dynamics_table(table, dlogp_bound=1.0)["dH/small_steps/corr"]
    assert small > 0.9 > rows["dH/predicted/corr"]  # the miss is outside the 1-nat bound
    assert main(["dynamics", str(synthetic_run), "--dlogp-bound", "0.6"]) == 0
    assert "| dH/small_steps/steps | 6 |" in capsys.readouterr().out
    assert main(["dynamics", str(synthetic_run), "--dlogp-bound", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "entropix dynamics: error: the dlogp/max bound must be > 0 nats, got -1.0"
    del table["dlogp/max"]
    assert not any(k.startswith("dH/small_steps") for k in dynamics_table(table))


def test_missing_metrics_are_omitted_rows(tmp_path):
    table = metrics_table(write_run(tmp_path, steps=6))
    for key in ("dH/logit_law", "dH/pred/zero", "dH/pred/forking", "dH/pred/non_forking"):
        del table[key]
    table["reward"][:] = np.nan
    rows = dynamics_table(table)
    assert "dH/logit_law/corr" not in rows and "dH/sampled_cov/corr" in rows
    assert "dH/pred/zero/share" not in rows and "dH/pred/forking/mean" not in rows
    assert not any(k.startswith("law/") for k in rows)
    quadrant_shares = [rows[f"{k}/share"] for k in PARTITIONS["quadrants"][:4]]
    np.testing.assert_allclose(sum(quadrant_shares), 1.0)  # over the groups that were logged


def test_command_prints_and_writes_per_sub_run(tmp_path, capsys):
    write_run(tmp_path / "a")
    write_run(tmp_path / "b", seed=1)
    write_run(tmp_path / "sft", dynamics=False)  # a warm-up run without dH: skipped
    assert main(["dynamics", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "| quantity | a | b |"
    assert "| dH/predicted/corr |" in out and "| law/ceiling |" in out
    assert (tmp_path / "dynamics_table.md").read_text().strip() == out.strip()
    saved = json.loads((tmp_path / "dynamics_table.json").read_text())
    assert set(saved) == {"a", "b"} and saved["a"]["steps"] == 12


def test_columns_with_different_rows_keep_each_runs_order(tmp_path, capsys):
    write_run(tmp_path / "a", telemetry=False)  # no dlogp/max: no dlogp rows in column a
    write_run(tmp_path / "b")
    assert main(["dynamics", str(tmp_path)]) == 0
    names = [line.split(" | ")[0][2:] for line in capsys.readouterr().out.splitlines()[2:]]
    assert names == list(dynamics_table(metrics_table(tmp_path / "b")))
    assert names.index("dlogp/max/at_worst") < names.index("dH/logit_law/corr")


def test_run_without_dynamics_is_a_one_line_error(tmp_path, capsys):
    write_run(tmp_path, dynamics=False)
    assert main(["dynamics", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("entropix dynamics: error: no run in") and "dH/predicted" in err
    with pytest.raises(ValueError, match="no steps with both dH/predicted and dH/measured"):
        dynamics_table(metrics_table(tmp_path))


def test_help_explains_every_row(synthetic_run, capsys):
    with pytest.raises(SystemExit):
        main(["dynamics", "--help"])
    text = capsys.readouterr().out
    for row in dynamics_table(metrics_table(synthetic_run)):
        if not row.startswith("dH/pred/"):
            assert row.split("/")[-1].split("_")[0] in text, row
    assert "dH/pred/<group>/share" in text
