"""Compare runs in one table: final reward, final entropy, collapse step.

Final values are the mean of the last ``--last`` logged values. The collapse step is the first
step after which entropy stays below ``--fraction`` of its initial value (the mean of the first
``--window`` logged values; :func:`entropix.dynamics.collapse_step`); "-" when it never
collapsed. A run dir holding
sub-runs (a sweep) contributes one row per sub-run.
"""

import numpy as np

from entropix.commands.plot import find_runs, metrics_table, series


def add_arguments(parser):
    parser.add_argument("run_dirs", nargs="+", help="run directories written by `entropix run`")
    parser.add_argument("--last", type=int, default=5, help="average the last N logged values")
    parser.add_argument("--fraction", type=float, default=0.5, help="collapse threshold")
    parser.add_argument("--window", type=int, default=5, help="steps averaged for H_0")


def summarize(run_dir, last: int = 5, fraction: float = 0.5, window: int = 5) -> dict:
    """{final_reward, final_entropy, collapse_step} of one run's metrics.jsonl."""
    import jax.numpy as jnp

    from entropix.dynamics import collapse_step

    table = metrics_table(run_dir)
    row = {}
    for key in ("reward", "entropy"):
        _, values = series(table, key)
        row[f"final_{key}"] = float(np.mean(values[-last:])) if len(values) else float("nan")
    steps, entropy = series(table, "entropy")
    index = -1
    if len(entropy):
        h = jnp.asarray(entropy, jnp.float32)
        index = int(collapse_step(h, fraction, min(window, len(entropy))))
    row["collapse_step"] = int(steps[index]) if index >= 0 else None
    return row


def table(run_dirs, last: int = 5, fraction: float = 0.5, window: int = 5) -> str:
    """The Markdown comparison table of ``run_dirs``."""
    lines = ["| run | final reward | final entropy | collapse step |", "|---|---|---|---|"]
    for run_dir in run_dirs:
        for label, path in find_runs(run_dir).items():
            row = summarize(path, last, fraction, window)
            step = "-" if row["collapse_step"] is None else row["collapse_step"]
            lines.append(
                f"| {label} | {row['final_reward']:.3f} | {row['final_entropy']:.3f} | {step} |"
            )
    return "\n".join(lines)


def run(args) -> int:
    print(table(args.run_dirs, args.last, args.fraction, args.window))
    return 0
