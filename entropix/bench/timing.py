"""Wall-clock timing of compiled JAX programs: compile first, then time >= 5 runs.

Every figure is the wall time of one call of an already compiled executable, waited on with
``jax.block_until_ready`` (JAX dispatches asynchronously, so without it only the dispatch
would be timed). One untimed warm-up call precedes the timed runs. Programs compared with each
other are timed interleaved (A, B, A, B, ...) so that load from other processes on a shared
machine hits both alike; a figure is reported as the median with the min and max.
"""

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax

MIN_REPEATS = 5


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one program: median, min and max over ``runs`` timed calls, and the
    calls' times in round order (``samples``)."""

    median: float
    min: float
    max: float
    runs: int
    samples: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, float]:
        """The summary for a results file (samples left out).

        Returns:
            ``{"median_s", "min_s", "max_s", "runs"}``.
        """
        return {"median_s": self.median, "min_s": self.min, "max_s": self.max, "runs": self.runs}


def compile_jit(fn: Callable, *args: Any) -> jax.stages.Compiled:
    """``jax.jit(fn)`` lowered and compiled for ``args``: the executable, compile time excluded.

    Args:
        fn: the function to compile.
        *args: example arguments (their shapes, dtypes and shardings are compiled for).

    Returns:
        The compiled executable; call it with arguments like ``args``.
    """
    return jax.jit(fn).lower(*args).compile()


def _summary(samples: Sequence[float]) -> Timing:
    return Timing(
        statistics.median(samples), min(samples), max(samples), len(samples), tuple(samples)
    )


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of a's time / b's time in the same round of ``time_calls``.

    Load from other processes comes and goes over seconds; the two calls of one round see
    nearly the same load, so the median of per-round ratios is far steadier than the ratio of
    the two medians when the machine is shared.

    Args:
        a: the numerator's timing.
        b: the denominator's timing, from the same :func:`time_calls` run.

    Returns:
        The median per-round ratio a / b (dimensionless).
    """
    return statistics.median(x / y for x, y in _rounds(a, b, "paired_ratio"))


def paired_difference(a: Timing, b: Timing) -> float:
    """Median over rounds of a's time - b's time in the same round of ``time_calls``: the extra
    seconds of a over b, as steady against other processes' load as :func:`paired_ratio`.

    Args:
        a: the longer call's timing.
        b: the shorter call's timing, from the same :func:`time_calls` run.

    Returns:
        The median per-round difference a - b in seconds.
    """
    return statistics.median(x - y for x, y in _rounds(a, b, "paired_difference"))


def _rounds(a: Timing, b: Timing, name: str) -> list[tuple[float, float]]:
    if len(a.samples) != len(b.samples) or not a.samples:
        raise ValueError(f"{name} needs two Timings from the same time_calls run")
    return list(zip(a.samples, b.samples, strict=True))


def time_calls(calls: Sequence[Callable[[], object]], repeats: int = MIN_REPEATS) -> list[Timing]:
    """Time zero-argument calls side by side: one warm-up each, then ``repeats`` interleaved
    rounds; each call's result is waited on with ``block_until_ready`` before the clock stops.

    Args:
        calls: zero-argument callables, each running one compiled program.
        repeats: timed rounds, >= :data:`MIN_REPEATS`; default 5.

    Returns:
        One :class:`Timing` (seconds per call) per call, in order.
    """
    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats must be >= {MIN_REPEATS} (got {repeats})")
    for call in calls:
        jax.block_until_ready(call())
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for call, bucket in zip(calls, samples, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(call())
            bucket.append(time.perf_counter() - start)
    return [_summary(bucket) for bucket in samples]
