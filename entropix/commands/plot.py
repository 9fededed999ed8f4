"""Plot a run's curves to PNG: entropy, reward, and predicted vs measured entropy change.

Reads ``RUN_DIR/metrics.jsonl`` (and the ``metrics.jsonl`` of each sub-run, e.g. one per method
of a sweep) and writes ``RUN_DIR/plots/curves.png`` and, when the run logged both
``dH/predicted`` and ``dH/measured``, ``RUN_DIR/plots/entropy_change.png``.
"""

from pathlib import Path

import numpy as np

from entropix.runs import find_runs, metrics_table, series

CURVES = ("entropy", "reward")


def add_arguments(parser):
    parser.add_argument("run_dir", help="a run directory written by `entropix run`")


def smooth(values: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Centred moving average over ``fraction`` of the curve (edges use the available points)."""
    width = max(1, int(len(values) * fraction)) | 1
    kernel = np.ones(width)
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(np.ones_like(values), kernel, mode="same")
    return total / count


def plot_run(run_dir) -> list[Path]:
    """Write the PNGs for ``run_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {label: metrics_table(path) for label, path in find_runs(run_dir).items()}
    out = Path(run_dir) / "plots"
    out.mkdir(exist_ok=True)
    written = []
    present = [
        k for k in CURVES if any(np.isfinite(t.get(k, [np.nan])).any() for t in runs.values())
    ]
    if present:
        fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.5), squeeze=False)
        for ax, key in zip(axes[0], present, strict=True):
            for label, table in runs.items():
                steps, values = series(table, key)
                if len(values):
                    line = ax.plot(steps, smooth(values), label=label, lw=1.2)[0]
                    if len(runs) == 1:
                        ax.plot(steps, values, color=line.get_color(), alpha=0.25, lw=0.8)
            ax.set_xlabel("step")
            ax.set_title(f"{key} (moving average)")
        if len(runs) > 1:
            axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=80)
        plt.close(fig)
        written.append(out / "curves.png")
    pairs = []
    for label, table in runs.items():
        steps_p, predicted = series(table, "dH/predicted")
        steps_m, measured = series(table, "dH/measured")
        common, ip, im = np.intersect1d(steps_p, steps_m, return_indices=True)
        if len(common):
            pairs.append((label, predicted[ip], measured[im]))
    if pairs:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for label, predicted, measured in pairs:
            corr = np.corrcoef(predicted, measured)[0, 1] if len(predicted) > 1 else np.nan
            ax.scatter(predicted, measured, s=8, label=f"{label} (r={corr:.2f})")
        spread_p = max(np.ptp(p) for _, p, _ in pairs)
        spread_m = max(np.ptp(m) for _, _, m in pairs)
        if 0.1 < spread_p / max(spread_m, 1e-30) < 10:  # same scale: draw y = x
            lo = min(min(p.min(), m.min()) for _, p, m in pairs)
            hi = max(max(p.max(), m.max()) for _, p, m in pairs)
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("predicted dH (first order)")
        ax.set_ylabel("measured dH")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "entropy_change.png", dpi=80)
        plt.close(fig)
        written.append(out / "entropy_change.png")
    return written


def run(args) -> int:
    for path in plot_run(args.run_dir):
        print(path)
    return 0
