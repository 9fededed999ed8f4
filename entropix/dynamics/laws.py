"""Entropy-performance law, training stages and the collapse step, from logged curves.

* ``fit_entropy_performance``: R = -a * exp(H) + b by closed-form least squares in x = exp(H);
  the predicted ceiling is R(H=0) = b - a ("The Entropy Mechanism of Reinforcement Learning for
  Reasoning Language Models", Cui et al. 2025, fitted there on (entropy, validation reward)
  pairs from RL runs without entropy intervention).
* ``detect_stages``: per step +1 rising / 0 plateau / -1 falling, from the least-squares slope
  over a centred window, measured relative to the mean slope of the whole curve.
* ``collapse_step``: the first step t with H_s < fraction * H_0 for every s >= t (entropy fell
  below a fraction of its initial value and stayed there); -1 if that never happens.

All functions are pure JAX and jit-able (window sizes are static).
"""

from typing import NamedTuple

import jax.numpy as jnp

from entropix.validation import check_floating, check_positive, check_rank


class EntropyPerformanceFit(NamedTuple):
    """R = -a exp(H) + b, the ceiling b - a, and the coefficient of determination r2."""

    a: jnp.ndarray
    b: jnp.ndarray
    ceiling: jnp.ndarray
    r2: jnp.ndarray


def _curve(x, name):
    check_floating(x, name)
    check_rank(x, name, 1)
    return jnp.asarray(x, jnp.float32)


def fit_entropy_performance(entropy, reward) -> EntropyPerformanceFit:
    """Least squares of reward on exp(entropy): slope -a, intercept b; ceiling = b - a."""
    h, r = _curve(entropy, "entropy"), _curve(reward, "reward")
    if h.shape != r.shape:
        raise ValueError(f"entropy {h.shape} and reward {r.shape} must have the same length")
    x = jnp.exp(h)
    xc, rc = x - x.mean(), r - r.mean()
    var = jnp.sum(xc * xc)
    slope = jnp.where(var > 0, jnp.sum(xc * rc) / jnp.where(var > 0, var, 1.0), 0.0)
    b = r.mean() - slope * x.mean()
    residual = jnp.sum((r - (slope * x + b)) ** 2)
    total = jnp.sum(rc * rc)
    r2 = jnp.where(total > 0, 1.0 - residual / jnp.where(total > 0, total, 1.0), 1.0)
    return EntropyPerformanceFit(a=-slope, b=b, ceiling=b - (-slope), r2=r2)


def local_slope(values, window: int = 5):
    """Least-squares slope of ``values`` over a centred window of 2*window+1 (edges padded)."""
    v = _curve(values, "values")
    check_positive(window, "window")
    offsets = jnp.arange(-window, window + 1, dtype=jnp.float32)
    kernel = offsets / jnp.sum(offsets**2)
    padded = jnp.pad(v, window, mode="edge")
    return jnp.convolve(padded, kernel[::-1], mode="valid")


def detect_stages(values, window: int = 5, tol: float = 0.25):
    """+1 rising / 0 plateau / -1 falling per step.

    rel_slope_t = local_slope_t * (N - 1) / (max v - min v); rising if rel_slope > tol, falling
    if < -tol (a straight ramp has rel_slope 1).
    """
    v = _curve(values, "values")
    span = v.max() - v.min()
    rel = local_slope(v, window) * (v.shape[0] - 1) / jnp.where(span > 0, span, 1.0)
    return jnp.where(rel > tol, 1, jnp.where(rel < -tol, -1, 0)).astype(jnp.int32)


def plateau_start(values, window: int = 5, tol: float = 0.25):
    """The first step from which every step is a plateau (stage 0); -1 if the curve ends moving."""
    flat = detect_stages(values, window, tol) == 0
    return _first_of_final_run(flat)


def _first_of_final_run(flags):
    """Index of the first element of the trailing run of True; -1 if the last is False."""
    stays = jnp.cumprod(flags[::-1].astype(jnp.int32))[::-1].astype(bool)
    return jnp.where(stays[-1], jnp.argmax(stays), -1).astype(jnp.int32)


def collapse_step(entropy, fraction: float = 0.25, initial_window: int = 1):
    """First step t with H_s < fraction * H_0 for all s >= t; -1 if entropy never collapses.

    H_0 is the mean of the first ``initial_window`` values (to smooth a noisy start).
    """
    h = _curve(entropy, "entropy")
    check_positive(initial_window, "initial_window")
    h0 = h[:initial_window].mean()
    return _first_of_final_run(h < fraction * h0)
