"""JSONL schema, resume truncation, TensorBoard files and the progress line."""

import io
import json
import math

from entropix.train import MetricsLogger, Progress, metrics_postfix, read_metrics, tracked
from entropix.train.metrics import FIXED_KEYS


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _log(run_dir, steps, resume_step=0, stream=None, **kwargs):
    logger = MetricsLogger(
        run_dir, total_steps=10, resume_step=resume_step, stream=stream or io.StringIO(), **kwargs
    )
    for step in steps:
        logger.log(step, {"loss": 1.0 / step, "entropy": 2.0, "reward/mean": 0.5})
    logger.close()
    return logger


def test_jsonl_schema_and_nonfinite_as_null(tmp_path):
    logger = MetricsLogger(tmp_path, total_steps=3, stream=io.StringIO(), tensorboard=True)
    logger.log(1, {"loss": 0.5, "kl/loss": float("nan"), "guard/skipped": 0.0})
    logger.log(2, {"loss": float("inf"), "kl/loss": 0.1, "guard/skipped": 1.0})
    logger.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])  # strict JSON: no NaN literals
    assert list(first)[:4] == list(FIXED_KEYS)
    assert first["step"] == 1 and first["kl/loss"] is None and first["loss"] == 0.5
    assert "NaN" not in lines[0] and "Infinity" not in lines[1]
    assert isinstance(first["time"], float) and first["steps_per_s"] > 0
    records = read_metrics(tmp_path)
    assert math.isnan(records[0]["kl/loss"]) and math.isnan(records[1]["loss"])
    assert any((tmp_path / "tensorboard").iterdir())


def test_rate_counts_the_steps_between_records(tmp_path):
    logger = MetricsLogger(tmp_path, resume_step=10, stream=io.StringIO(), tensorboard=False)
    logger.last -= 2.0  # the first record comes 2 s after the start: 10 steps -> 5 steps/s
    first = logger.log(20, {"loss": 1.0})
    logger.close()
    assert 4.0 < first["steps_per_s"] <= 5.0


def test_resume_drops_records_after_the_restored_step(tmp_path):
    _log(tmp_path, range(1, 7), tensorboard=False)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "loss"')  # torn line of a killed process
    _log(tmp_path, range(5, 9), resume_step=4, tensorboard=False)
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 9))


def test_metrics_postfix_fields():
    line = metrics_postfix({"loss": 0.25, "policy/entropy": 1.5, "reward": 0.75})
    assert line == "loss 0.2500 | entropy 1.500 | reward 0.750"
    assert metrics_postfix({"loss": 1.0, "guard/nonfinite_total": 2.0}) == "loss 1.0000 | skipped 2"


def test_progress_plain_lines_off_a_terminal_and_a_bar_on_one(tmp_path):
    plain = io.StringIO()
    _log(tmp_path / "a", range(1, 7), stream=plain, progress_every=3, tensorboard=False)
    lines = plain.getvalue().splitlines()
    assert [line.split(" |")[0] for line in lines] == ["step 3/10", "step 6/10"]
    assert "reward 0.500" in lines[0] and "steps/s" in lines[0] and "eta " in lines[0]
    assert "\r" not in plain.getvalue()
    terminal = _Terminal()
    _log(tmp_path / "b", range(1, 4), stream=terminal, tensorboard=False)
    text = terminal.getvalue()
    assert "\r" in text and "3/10" in text and "steps/s" in text and "reward=" not in text
    assert "reward 0.500" in text  # the postfix


def test_progress_eta_counts_only_work_done_here_and_tracked_names_items():
    out = io.StringIO()
    progress = Progress(100, "rl", initial=50, stream=out)
    progress.start -= 10.0  # 10 s ago: 25 steps done in this process -> 2.5/s, 25 left -> 10 s
    progress.update(75, "reward 0.5")
    assert out.getvalue().strip() == "rl 75/100 | reward 0.5 | 2.50 it/s | eta 10s"
    out = io.StringIO()
    assert list(tracked(["a", "b"], "sweep", stream=out)) == ["a", "b"]
    lines = out.getvalue().splitlines()
    assert [line.split(" | ")[:2] for line in lines] == [["sweep 1/2", "a"], ["sweep 2/2", "b"]]
    assert lines[-1].split(" | ")[-1].startswith("took ")
