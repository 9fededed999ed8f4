"""Per-step metrics: a JSONL file (always), TensorBoard event files, and a progress line.

``<run_dir>/metrics.jsonl`` holds one JSON object per train step, in step order:

    {"step": 12,                 # int, the step just completed (1-based: state.step after it)
     "time": 1732312345.6,       # float, unix time when the record was written
     "elapsed_s": 42.1,          # float, seconds since this process started logging
     "steps_per_s": 3.2,         # float, smoothed training rate (EMA over records, 0.9)
     "loss": 0.731,              # every metric of the train step, flat "group/name" keys:
     "entropy": 1.21,            #   the loss function's metrics (e.g. "<term>/loss"),
     "optim/grad_norm": 0.4,     #   optim/*, controls/*, guard/* (see entropix.train.step)
     ...}

Values are JSON numbers; a non-finite value is written as ``null``. Keys other than the four
fixed ones are exactly the train step's metric names. On resume, records after the restored
step are dropped first, so the file never holds a step twice.

TensorBoard: ``<run_dir>/tensorboard/`` (tensorboardX), one scalar per metric per step
(non-finite values skipped). Progress (``entropix.train.progress``): on a terminal a bar with
rate and ETA showing loss, entropy, reward and skipped steps; otherwise a plain line every
``progress_every`` steps. Only process 0 writes anything. The rate counts the steps between
two records, so a caller may log every N-th step only.
"""

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path

import jax

from entropix.train.progress import Progress

FIXED_KEYS = ("step", "time", "elapsed_s", "steps_per_s")
METRICS_FILE = "metrics.jsonl"


def _find(metrics: Mapping, names: tuple[str, ...], suffixes: tuple[str, ...]):
    for name in names:
        if name in metrics:
            return metrics[name]
    for key in sorted(metrics):
        if key.endswith(suffixes) and not key.startswith(("optim/", "guard/", "controls/")):
            return metrics[key]
    return None


def metrics_postfix(metrics: Mapping[str, float]) -> str:
    """The metrics a progress line shows: ``loss 0.7310 | entropy 1.210 | reward 0.500``, and
    ``skipped N`` once the non-finite guard has skipped updates.

    Args:
        metrics: a step's metrics, floats keyed by name (entropy and reward are found by name
            or by a ``/entropy`` / ``/reward`` suffix).

    Returns:
        The postfix text (empty when none of them is present).
    """
    parts = []
    loss = metrics.get("loss")
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    entropy = _find(metrics, ("entropy", "entropy/mean"), ("/entropy", "entropy/mean"))
    if entropy is not None:
        parts.append(f"entropy {entropy:.3f}")
    reward = _find(metrics, ("reward", "reward/mean"), ("/reward", "reward/mean"))
    if reward is not None:
        parts.append(f"reward {reward:.3f}")
    skipped = metrics.get("guard/nonfinite_total", 0)
    if skipped:
        parts.append(f"skipped {int(skipped)}")
    return " | ".join(parts)


def _json_value(value):
    value = float(value)
    return value if math.isfinite(value) else None


class MetricsLogger:
    """Write each step's metrics to JSONL, TensorBoard and the progress line."""

    def __init__(
        self,
        run_dir,
        *,
        total_steps: int | None = None,
        resume_step: int = 0,
        tensorboard: bool = True,
        progress_every: int = 1,
        desc: str = "step",
        stream=None,
    ):
        self.enabled = jax.process_index() == 0
        self.run_dir = Path(run_dir)
        self.total_steps = total_steps
        self.progress = Progress(
            total_steps, desc, initial=resume_step, every=progress_every, unit="steps",
            stream=stream,
        )  # fmt: skip
        self.start = self.last = time.time()
        self.last_step = resume_step
        self.rate = 0.0
        self._file = self._tb = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / METRICS_FILE
        if path.exists():  # drop records the resumed run is about to redo
            kept = [line for line in _lines(path) if json.loads(line)["step"] <= resume_step]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(path)
        self._file = path.open("a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def log(self, step: int, metrics: Mapping[str, float]) -> dict:
        """Record the metrics of ``step`` (JSONL, TensorBoard, progress; process 0 only).

        Args:
            step: the completed step.
            metrics: its metrics, floats keyed by name.

        Returns:
            The JSON record: ``step``, ``time``, ``elapsed_s``, ``steps_per_s`` and the
            metrics (non-finite values as None).
        """
        now = time.time()
        rate = max(step - self.last_step, 1) / max(now - self.last, 1e-9)
        self.rate = rate if self.rate == 0.0 else 0.9 * self.rate + 0.1 * rate
        self.last, self.last_step = now, step
        values = {k: float(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": now, "elapsed_s": now - self.start}
        record["steps_per_s"] = self.rate
        record.update({k: _json_value(v) for k, v in values.items() if k not in FIXED_KEYS})
        if not self.enabled:
            return record
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        self.progress.update(step, metrics_postfix(values))
        return record

    def message(self, text: str) -> None:
        """Print a line (on a terminal, above the progress bar).

        Args:
            text: the line.
        """
        self.progress.write(text)

    def close(self) -> None:
        """Close the progress bar, the JSONL file and the TensorBoard writer."""
        self.progress.close()
        if not self.enabled:
            return
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``<run_dir>/metrics.jsonl`` (``null`` values read back as NaN).

    Args:
        run_dir: the run directory.

    Returns:
        One dict per logged step, in file order (a torn last line is dropped).
    """
    records = []
    for line in _lines(Path(run_dir) / METRICS_FILE):
        record = json.loads(line)
        records.append({k: (math.nan if v is None else v) for k, v in record.items()})
    return records


def _lines(path: Path) -> list[str]:
    """Complete JSON lines (a torn last line from a killed process is dropped)."""
    lines = []
    for line in path.read_text().splitlines():
        try:
            json.loads(line)
        except ValueError:
            continue
        lines.append(line)
    return lines
