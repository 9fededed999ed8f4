"""Benchmark results: rows per suite, written as ``results.json`` and ``results.md``.

A row is one measured case. ``ratios`` holds the headline figures (dimensionless, each the
quotient of two programs timed or compiled side by side in this process); ``values`` holds the
raw figures they come from (seconds, bytes, tokens/s); ``targets`` maps a target's text to
whether this run met it. A suite that cannot run a case gives a row with status
``not available`` and the reason instead of failing.
"""

import datetime
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax


def row(
    case: str,
    ratios: Mapping[str, float],
    values: dict[str, Any],
    targets: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """A measured row; ``targets`` maps target text -> met (bool).

    Args:
        case: the case's name (one line).
        ratios: headline figures by name, dimensionless.
        values: the raw figures they come from (JSON-serialisable).
        targets: target text -> whether this run met it; default none.

    Returns:
        ``{"case", "status": "ok", "ratios" (floats), "values", "targets"}``.
    """
    return {
        "case": case,
        "status": "ok",
        "ratios": {k: float(v) for k, v in ratios.items()},
        "values": values,
        "targets": dict(targets or {}),
    }


def unavailable(case: str, reason: str) -> dict[str, str]:
    """A row for a case that could not run, with the reason in one line.

    Args:
        case: the case's name.
        reason: why it could not run.

    Returns:
        ``{"case", "status": "not available", "reason"}``.
    """
    return {"case": case, "status": "not available", "reason": reason}


def environment() -> dict[str, Any]:
    """Device kind, platform, device count and JAX version of this process.

    Returns:
        ``{"device_kind", "platform", "device_count", "jax_version"}``.
    """
    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
    }


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    return str(value)


def markdown(results: Mapping[str, Any]) -> str:
    """One Markdown table per suite: case, ratios, targets (met / not met) or the skip reason.

    Args:
        results: the results dict of :func:`write` (environment, created, quick, suites).

    Returns:
        The Markdown text, a heading line per suite.
    """
    env = results["environment"]
    lines = [
        "# entropix bench",
        "",
        f"Device: {env['device_kind']} ({env['platform']}, {env['device_count']} device(s)); "
        f"JAX {env['jax_version']}; {results['created']}; "
        f"{'quick sizes' if results['quick'] else 'normal sizes'}.",
        "",
    ]
    for suite, rows in results["suites"].items():
        lines += [f"## {suite}", "", "| case | ratios | targets |", "|---|---|---|"]
        for r in rows:
            if r["status"] != "ok":
                reason = r["reason"].replace("|", "/").replace("\n", " ")
                lines.append(f"| {r['case']} | not available: {reason} | |")
                continue
            ratios = ", ".join(f"{k} {_fmt(v)}" for k, v in r["ratios"].items())
            targets = ", ".join(
                f"{k}: {'met' if met else 'not met'}" for k, met in r["targets"].items()
            )
            lines.append(f"| {r['case']} | {ratios} | {targets} |")
        lines.append("")
    return "\n".join(lines)


def write(out_dir: str | Path, suites: dict[str, list[dict]], quick: bool) -> dict[str, Any]:
    """Write ``results.json`` and ``results.md`` under ``out_dir``.

    Args:
        out_dir: the directory (created if missing).
        suites: suite name -> its rows (:func:`row` / :func:`unavailable`).
        quick: whether the quick sizes were measured.

    Returns:
        The results dict written to ``results.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "environment": environment(),
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": quick,
        "suites": suites,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    return results
