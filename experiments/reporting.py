"""Run outputs shared by the experiments: a metrics log (JSONL, optional TensorBoard) and
Markdown tables."""

import json
import math
from pathlib import Path


class MetricsLog:
    """Append ``{"step": t, **scalars}`` lines to ``run_dir/metrics.jsonl`` (+ TensorBoard).

    Opening an existing log keeps the lines with step <= ``resume_step`` (the last step the
    checkpoint holds), so a resumed run continues the file without duplicate steps; without it
    the log starts afresh.
    """

    def __init__(self, run_dir, tensorboard: bool = True, resume_step: int | None = None):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        keep = -1 if resume_step is None else resume_step
        lines = [line for line in lines if line and json.loads(line)["step"] <= keep]
        self.path.write_text("".join(f"{line}\n" for line in lines))
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tb"))

    def write(self, step: int, scalars: dict) -> None:
        row = {"step": int(step)}
        for key, value in scalars.items():
            value = float(value)
            row[key] = value if math.isfinite(value) else None
            if self._tb is not None and math.isfinite(value):
                self._tb.add_scalar(key, value, int(step))
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "nan"
    return str(value)


def markdown_table(header, rows) -> str:
    """A Markdown table; floats with 3 decimals, None as '-'."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
