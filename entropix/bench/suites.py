"""The suites ``entropix bench`` knows, in run order, and the layers each one needs.

A suite runs when its benchmark module and every layer module it needs can be imported;
otherwise it yields one ``not available`` row naming what is missing, so ``--suite all`` always
completes. Each benchmark module exposes ``run(quick: bool, repeats: int) -> list[row]``.
"""

import importlib
import importlib.util
from typing import TextIO

from entropix.bench import report

# suite -> (benchmark module, layer modules it needs)
SUITES: dict[str, tuple[str, tuple[str, ...]]] = {
    "entropy": ("entropix.bench.entropy", ("entropix.entropy.fused",)),
    "loss": ("entropix.bench.loss", ("entropix.losses",)),
    "train": ("entropix.bench.train", ("entropix.models", "entropix.train")),
    "rollout": ("entropix.bench.rollout", ("entropix.models", "entropix.rollout")),
    "scaling": ("entropix.bench.scaling", ("experiments.dynamics",)),
    "rl": ("entropix.bench.rl", ("entropix.rl",)),
}


def _missing(module: str) -> str | None:
    """Why ``module`` cannot be imported, or None when it can."""
    try:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not in this tree yet"
        importlib.import_module(module)
    except Exception as error:
        return f"{module} does not import ({type(error).__name__}: {error})"
    return None


def run_suite(name: str, quick: bool, repeats: int) -> list[dict]:
    """Rows of one suite, or a single ``not available`` row saying which module is missing.

    Args:
        name: a key of :data:`SUITES`.
        quick: measure the suite's quick sizes.
        repeats: timed rounds per program (>= ``timing.MIN_REPEATS``).

    Returns:
        The suite's rows (``report.row`` / ``report.unavailable`` dicts).
    """
    bench_module, needs = SUITES[name]
    for module in needs:
        reason = _missing(module)
        if reason is not None:
            return [report.unavailable(name, reason)]
    if importlib.util.find_spec(bench_module) is None:
        return [report.unavailable(name, f"its benchmark module {bench_module} is not written")]
    return importlib.import_module(bench_module).run(quick, repeats)


def run_suites(
    names: list[str], quick: bool, repeats: int, stream: TextIO | None = None
) -> dict[str, list[dict]]:
    """Run the named suites in order, with a progress bar (or plain lines off a terminal).

    Args:
        names: keys of :data:`SUITES`.
        quick: measure the suites' quick sizes.
        repeats: timed rounds per program.
        stream: where the progress goes (default standard error, so the Markdown on standard
            output stays clean).

    Returns:
        Suite name -> its rows.
    """
    import sys

    from entropix.train.progress import tracked

    stream = sys.stderr if stream is None else stream
    return {
        name: run_suite(name, quick, repeats)
        for name in tracked(names, "bench", stream=stream, label=lambda n: f"suite {n}")
    }
