"""Figures of finished runs (library code; ``entropix plot RUN_DIR`` calls :func:`plot_run`): PNG
curves of entropy, reward, predicted vs measured entropy change, and more.

Reads ``RUN_DIR/metrics.jsonl`` (and the ``metrics.jsonl`` of each sub-run, e.g. one per method
of a sweep) and writes under ``RUN_DIR/plots/``, each when the run logged its metrics:

- ``curves.png``: entropy and reward over steps (moving average);
- ``entropy_change.png``: measured vs predicted dH per step (``dH/measured``,
  ``dH/predicted``), with Pearson r and R^2 of the prediction read as y = x, and the step with
  the largest residual ringed and named with its ``dlogp/max``
  (``entropix.runs.residual_summary``); where the run logged ``dH/second_order``, the
  second-order prediction beside it as crosses, with its own r and R^2;
- ``quadrants.png``: each token group's signed share g_t / sum_g' |g'_t| of dH/predicted over
  steps, for the advantage-sign x probability quadrants (``dH/pred/pos_high`` ...) and the
  forking / non-forking split;
- ``entropy_position.png``: mean token entropy by response-position bin
  (``entropy/position/<i>``; positions as a fraction of the maximum response length, not of
  each response's own) at a few evenly spaced logged steps, coloured by step;
- ``entropy_law.png``: reward vs entropy with the fit R = -a exp(H) + b, and the ceiling b - a
  fitted on the first k steps (with its 95% interval) over steps.
"""

from pathlib import Path

import numpy as np

from entropix.runs import (
    PARTITIONS,
    agreement,
    find_runs,
    law_summary,
    metrics_table,
    paired,
    partition_parts,
    residual_summary,
    series,
)

CURVES = ("entropy", "reward")
POSITION_PREFIX = "entropy/position/"
POSITION_STEPS = 5  # entropy_position.png: how many logged steps


def smooth(values: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Centred moving average over ``fraction`` of the curve (edges use the available points);
    an empty curve stays empty.

    Args:
        values: [n] curve.
        fraction: the window as a fraction of n (rounded down, at least 1, made odd);
            default 0.05.

    Returns:
        float [n] smoothed curve (NaN in the window propagates).
    """
    if len(values) == 0:
        return np.asarray(values, float)
    width = max(1, int(len(values) * fraction)) | 1
    kernel = np.ones(width)
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(np.ones_like(values), kernel, mode="same")
    return total / count


def _panels(plt, rows: int, cols: int):
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    return fig, axes


def _curves(plt, runs):
    present = [
        k for k in CURVES if any(np.isfinite(t.get(k, [np.nan])).any() for t in runs.values())
    ]
    if not present:
        return None
    fig, axes = _panels(plt, 1, len(present))
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
    return fig


def _worst_step_label(residual) -> str:
    text = f"step {residual['dH/residual/worst_step']}"
    if "dlogp/max/at_worst" in residual:
        at, median = residual["dlogp/max/at_worst"], residual["dlogp/max/median"]
        text += f"\nmax |Δlog π| {at:.2g}\n(median step {median:.2g})"
    return text


def _entropy_change(plt, runs):
    pairs = [(label, *paired(t, "dH/predicted", "dH/measured")) for label, t in runs.items()]
    pairs = [p for p in pairs if len(p[1])]
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for label, steps, predicted, measured in pairs:
        score = agreement(predicted, measured)
        text = f"r={score['corr']:.2f}, R²={score['r2_identity']:.2f}"
        ax.scatter(predicted, measured, s=8, label=f"{label} ({text})")
        residual = residual_summary(runs[label])
        if residual:  # ring and name the step the first order misses most
            at = steps == residual["dH/residual/worst_step"]
            x, y = predicted[at][0], measured[at][0]
            ax.scatter([x], [y], s=60, facecolors="none", edgecolors="k", lw=0.8)
            right = x > np.median(predicted)  # write the label toward the middle
            ax.annotate(
                _worst_step_label(residual),
                (x, y),
                fontsize=6,
                xytext=(-5 if right else 5, -5),
                textcoords="offset points",
                ha="right" if right else "left",
                va="top",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8, "lw": 0},
            )
        _, second, meas = paired(runs[label], "dH/second_order", "dH/measured")
        if len(second):
            score = agreement(second, meas)
            text = f"r={score['corr']:.2f}, R²={score['r2_identity']:.2f}"
            ax.scatter(second, meas, s=10, marker="x", lw=0.6, label=f"{label}, 2nd order ({text})")
    spread_p = max(np.ptp(p) for _, _, p, _ in pairs)
    spread_m = max(np.ptp(m) for _, _, _, m in pairs)
    if 0.1 < spread_p / max(spread_m, 1e-30) < 10:  # same scale: draw y = x
        lo = min(min(p.min(), m.min()) for _, _, p, m in pairs)
        hi = max(max(p.max(), m.max()) for _, _, p, m in pairs)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    second_order = any(len(series(t, "dH/second_order")[0]) for t in runs.values())
    ax.set_xlabel("predicted dH (first order" + ("; x: second order)" if second_order else ")"))
    ax.set_ylabel("measured dH")
    ax.set_title("dH per step (R² of measured = predicted)", fontsize=9)
    ax.legend(fontsize=6, loc="upper left")  # the points lie along y = x
    return fig


def _quadrants(plt, runs):
    parts = {
        label: {n: partition_parts(t, k) for n, k in PARTITIONS.items()}
        for label, t in runs.items()
    }
    parts = {label: p for label, p in parts.items() if any(len(s) for s, _ in p.values())}
    if not parts:
        return None
    fig, axes = _panels(plt, len(parts), len(PARTITIONS))
    for row, (label, by_partition) in zip(axes, parts.items(), strict=True):
        for ax, (name, (steps, groups)) in zip(row, by_partition.items(), strict=True):
            total = np.nansum([np.abs(v) for v in groups.values()], axis=0)
            for key, values in groups.items():
                share = np.where(total > 0, values / np.where(total > 0, total, 1), np.nan)
                keep = np.isfinite(share)
                ax.plot(steps[keep], smooth(share[keep]), lw=1.2, label=key.rsplit("/", 1)[1])
            ax.axhline(0, color="k", lw=0.5)
            ax.set_xlabel("step")
            ax.set_title(f"{label}: {name}, g / sum|g'| of dH/pred", fontsize=9)
            if groups:
                ax.legend(fontsize=7)
    return fig


def _position_bins(table) -> list[str]:
    keys = [
        k for k in table if k.startswith(POSITION_PREFIX) and k[len(POSITION_PREFIX) :].isdigit()
    ]
    return sorted(keys, key=lambda k: int(k[len(POSITION_PREFIX) :]))


def _entropy_position(plt, runs):
    profiles = {}
    for label, table in runs.items():
        keys = _position_bins(table)
        if not keys:
            continue
        values = np.stack([table[k] for k in keys], axis=1)
        logged = np.isfinite(values).any(axis=1)
        if logged.any():
            profiles[label] = (table["step"][logged], values[logged])
    if not profiles:
        return None
    fig, axes = _panels(plt, 1, len(profiles))
    for ax, (label, (steps, values)) in zip(axes[0], profiles.items(), strict=True):
        picks = np.unique(np.linspace(0, len(steps) - 1, POSITION_STEPS).round().astype(int))
        colours = plt.cm.viridis(np.linspace(0, 1, len(picks)))
        bins = values.shape[1]
        centres = (np.arange(bins) + 0.5) / bins
        for i, colour in zip(picks, colours, strict=True):
            ax.plot(centres, values[i], "o-", ms=3, color=colour, label=f"step {int(steps[i])}")
        ax.set_xlabel("position / max response length (bin centre)")
        ax.set_ylabel("mean token entropy")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    return fig


def _entropy_law(plt, runs):
    import jax.numpy as jnp

    from entropix.dynamics import live_ceiling

    laws = {label: (paired(t, "entropy", "reward"), law_summary(t)) for label, t in runs.items()}
    laws = {label: law for label, law in laws.items() if law[1]}
    if not laws:
        return None
    fig, axes = _panels(plt, len(laws), 2)
    for (left, right), (label, ((steps, h, r), fit)) in zip(axes, laws.items(), strict=True):
        dots = left.scatter(h, r, c=steps, s=8, cmap="viridis")
        fig.colorbar(dots, ax=left, label="step")
        grid = np.linspace(h.min(), h.max(), 100)
        text = f"R = -{fit['law/a']:.3g} exp(H) + {fit['law/b']:.3g}, R²={fit['law/r2']:.2f}"
        left.plot(grid, -fit["law/a"] * np.exp(grid) + fit["law/b"], "k-", lw=1, label=text)
        left.set_xlabel("entropy H")
        left.set_ylabel("reward R")
        left.set_title(label, fontsize=9)
        left.legend(fontsize=7)
        live = [np.asarray(v, np.float64) for v in live_ceiling(jnp.asarray(h), jnp.asarray(r))]
        ceiling, lower, upper = (np.where(np.isfinite(v), v, np.nan) for v in live)
        right.plot(steps, ceiling, lw=1.2, label="ceiling b - a, first k steps")
        right.fill_between(steps, lower, upper, alpha=0.25, label="95% interval")
        right.plot(steps, r, color="0.6", lw=0.6, label="reward")
        if np.isfinite(lower).any():  # early intervals are wide: show the bulk
            lo = min(np.nanpercentile(lower, 10), r.min())
            hi = max(np.nanpercentile(upper, 90), r.max())
            right.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        right.set_xlabel("step")
        right.set_title(f"{label}: live fit of the ceiling", fontsize=9)
        right.legend(fontsize=7)
    return fig


FIGURES = {
    "curves.png": _curves,
    "entropy_change.png": _entropy_change,
    "quadrants.png": _quadrants,
    "entropy_position.png": _entropy_position,
    "entropy_law.png": _entropy_law,
}


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the PNGs for ``run_dir`` (those whose metrics were logged); returns their paths.

    Args:
        run_dir: a run directory or a directory of runs (``runs.find_runs``); the figures go
            to ``run_dir/plots/`` (created).

    Returns:
        The written files, in the order of ``FIGURES`` (the module docstring lists them).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {label: metrics_table(path) for label, path in find_runs(run_dir).items()}
    out = Path(run_dir) / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for name, draw in FIGURES.items():
        fig = draw(plt, runs)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(out / name, dpi=80)
            plt.close(fig)
            written.append(out / name)
    return written
