"""Entropy-performance law, training stages and the collapse step, from logged curves.

* ``fit_entropy_performance``: R = -a * exp(H) + b by closed-form least squares in x = exp(H);
  the predicted ceiling is R(H=0) = b - a ("The Entropy Mechanism of Reinforcement Learning for
  Reasoning Language Models", Cui et al. 2025, fitted there on (entropy, validation reward)
  pairs from RL runs without entropy intervention).
* ``ceiling_interval``: the ceiling with a normal-approximation interval from the line's
  standard error at x = exp(0) = 1; ``live_ceiling``: the same on the first k points, every k.
* ``detect_stages``: per step +1 rising / 0 plateau / -1 falling, from the least-squares slope
  over a centred window, measured relative to the mean slope of the whole curve.
* ``collapse_step``: the first step t with H_s < fraction * H_0 for every s >= t (entropy fell
  below a fraction of its initial value and stayed there); -1 if that never happens.

All functions are pure JAX and jit-able (window sizes are static).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

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


class _Line(NamedTuple):
    """Weighted least-squares line y = slope * x + intercept and its sums of squares."""

    slope: jnp.ndarray
    intercept: jnp.ndarray
    n: jnp.ndarray  # sum of weights
    xbar: jnp.ndarray
    sxx: jnp.ndarray  # sum w (x - xbar)^2
    residual: jnp.ndarray  # sum w (y - slope x - intercept)^2
    total: jnp.ndarray  # sum w (y - ybar)^2


def _least_squares(x, y, w) -> _Line:
    """The line through (x, y) with weights w (0/1 selects points); slope 0 if x is constant.

    The sums are taken relative to the first selected point (x0, y0): equal values then give
    exactly 0 deviations, so a constant x has Sxx = 0 (and a constant y a zero total) instead
    of the float rounding of a mean that does not land on the value.
    """
    n = jnp.sum(w)
    first = jnp.argmax(w > 0)
    dx, dy = w * (x - x[first]), w * (y - y[first])  # 0 off the selected points
    dxbar, dybar = jnp.sum(dx) / n, jnp.sum(dy) / n
    xc, yc = w * (dx - dxbar), w * (dy - dybar)
    sxx = jnp.sum(xc * xc)
    slope = jnp.where(sxx > 0, jnp.sum(xc * yc) / jnp.where(sxx > 0, sxx, 1.0), 0.0)
    xbar, ybar = x[first] + dxbar, y[first] + dybar
    residual = jnp.sum((yc - slope * xc) ** 2)
    return _Line(slope, ybar - slope * xbar, n, xbar, sxx, residual, jnp.sum(yc * yc))


def _law_points(entropy, reward, min_points: int = 0):
    h, r = _curve(entropy, "entropy"), _curve(reward, "reward")
    if h.shape != r.shape:
        raise ValueError(f"entropy {h.shape} and reward {r.shape} must have the same length")
    if h.shape[0] < min_points:
        raise ValueError(
            f"the ceiling interval needs >= {min_points} (entropy, reward) points; got {h.shape[0]}"
        )
    return jnp.exp(h), r


def fit_entropy_performance(entropy: ArrayLike, reward: ArrayLike) -> EntropyPerformanceFit:
    """Least squares of reward on exp(entropy): slope -a, intercept b; ceiling = b - a.

    Formula: R = -a exp(H) + b. Paper: "The Entropy Mechanism of Reinforcement Learning for
    Reasoning Language Models" (Cui et al. 2025).

    Args:
        entropy: floating [steps] logged entropies H.
        reward: floating [steps] the rewards R logged at the same steps.

    Returns:
        :class:`EntropyPerformanceFit` of float32 scalars ``a``, ``b``, ``ceiling`` (= b - a)
        and ``r2`` (1 when the rewards are constant).
    """
    x, r = _law_points(entropy, reward)
    line = _least_squares(x, r, jnp.ones_like(x))
    fitted, total = line.total > 0, jnp.where(line.total > 0, line.total, 1.0)
    r2 = jnp.where(fitted, 1.0 - line.residual / total, 1.0)
    return EntropyPerformanceFit(
        a=-line.slope, b=line.intercept, ceiling=line.intercept + line.slope, r2=r2
    )


class CeilingInterval(NamedTuple):
    """The predicted ceiling b - a and the bounds ceiling -/+ z * se."""

    ceiling: jnp.ndarray
    lower: jnp.ndarray
    upper: jnp.ndarray


def _ceiling(line: _Line, z) -> CeilingInterval:
    ceiling = line.intercept + line.slope  # the line at x = exp(0) = 1: -a + b
    s2 = line.residual / (line.n - 2)
    var = s2 * (1.0 / line.n + (1.0 - line.xbar) ** 2 / jnp.where(line.sxx > 0, line.sxx, 1.0))
    half = jnp.where(line.sxx > 0, z * jnp.sqrt(var), jnp.inf)
    return CeilingInterval(ceiling, ceiling - half, ceiling + half)


def ceiling_interval(entropy: ArrayLike, reward: ArrayLike, z: float = 1.96) -> CeilingInterval:
    """The ceiling b - a of R = -a exp(H) + b with a normal-approximation interval.

    With x = exp(H) the fit is the line R = m x + b (m = -a), and the ceiling is its value at
    x = exp(0) = 1 (entropy 0), so its standard error is that of a fitted line's mean response:

        se = s * sqrt(1/n + (1 - xbar)^2 / Sxx),   s^2 = sum_i (R_i - m x_i - b)^2 / (n - 2),
        Sxx = sum_i (x_i - xbar)^2;                lower, upper = ceiling -/+ z * se

    (z = 1.96: 95% under normal residuals). Infinite width when every entropy is equal (no
    slope); zero width when the points lie on a line. "The Entropy Mechanism of Reinforcement
    Learning for Reasoning Language Models" (Cui et al. 2025) fits the law on (entropy,
    validation reward) pairs and reads the ceiling at H = 0. Needs n >= 3 points.

    Args:
        entropy: floating [steps] logged entropies H (>= 3 points).
        reward: floating [steps] the rewards R logged at the same steps.
        z: the interval's half-width in standard errors; default 1.96 (95%).

    Returns:
        :class:`CeilingInterval` of float32 scalars ``ceiling``, ``lower`` and ``upper``.
    """
    x, r = _law_points(entropy, reward, min_points=3)
    return _ceiling(_least_squares(x, r, jnp.ones_like(x)), z)


def live_ceiling(entropy: ArrayLike, reward: ArrayLike, z: float = 1.96) -> CeilingInterval:
    """``ceiling_interval`` of the first k points, for k = 1..n: arrays [n], NaN for k < 3.

    Element k - 1 is what the fit predicted when the run had logged k (entropy, reward) pairs,
    so the curve shows how the predicted ceiling settles as training goes on.

    Args:
        entropy: floating [steps] logged entropies H (>= 3 points).
        reward: floating [steps] the rewards R logged at the same steps.
        z: the interval's half-width in standard errors; default 1.96 (95%).

    Returns:
        :class:`CeilingInterval` of float32 [steps] arrays, NaN in the first two elements.
    """
    x, r = _law_points(entropy, reward, min_points=3)
    index = jnp.arange(x.shape[0])

    def first(k):
        return _ceiling(_least_squares(x, r, (index < k).astype(x.dtype)), z)

    live = jax.lax.map(first, index + 1)
    return CeilingInterval(*(jnp.where(index >= 2, v, jnp.nan) for v in live))


def local_slope(values: ArrayLike, window: int = 5) -> jax.Array:
    """Least-squares slope of ``values`` over a centred window of 2*window+1 (edges padded).

    Args:
        values: floating [steps] a logged curve.
        window: half-width of the window in steps, > 0 (static); default 5.

    Returns:
        float32 [steps] slopes, in units of ``values`` per step (edge values repeated past the
        ends).
    """
    v = _curve(values, "values")
    check_positive(window, "window")
    offsets = jnp.arange(-window, window + 1, dtype=jnp.float32)
    kernel = offsets / jnp.sum(offsets**2)
    padded = jnp.pad(v, window, mode="edge")
    return jnp.convolve(padded, kernel[::-1], mode="valid")


def detect_stages(values: ArrayLike, window: int = 5, tol: float = 0.25) -> jax.Array:
    """+1 rising / 0 plateau / -1 falling per step.

    Formula: rel_slope_t = local_slope_t * (N - 1) / (max v - min v); rising if rel_slope > tol,
    falling if < -tol (a straight ramp has rel_slope 1).

    Args:
        values: floating [steps] a logged curve (N steps).
        window: half-width of the slope window in steps, > 0; default 5.
        tol: relative-slope threshold; default 0.25 (our choice).

    Returns:
        int32 [steps] stages in {-1, 0, +1}.
    """
    v = _curve(values, "values")
    span = v.max() - v.min()
    rel = local_slope(v, window) * (v.shape[0] - 1) / jnp.where(span > 0, span, 1.0)
    return jnp.where(rel > tol, 1, jnp.where(rel < -tol, -1, 0)).astype(jnp.int32)


def plateau_start(values: ArrayLike, window: int = 5, tol: float = 0.25) -> jax.Array:
    """The first step from which every step is a plateau (stage 0); -1 if the curve ends moving.

    Args:
        values: floating [steps] a logged curve.
        window: half-width of the slope window in steps (:func:`detect_stages`); default 5.
        tol: relative-slope threshold (:func:`detect_stages`); default 0.25.

    Returns:
        int32 scalar step index, or -1.
    """
    flat = detect_stages(values, window, tol) == 0
    return _first_of_final_run(flat)


def _first_of_final_run(flags):
    """Index of the first element of the trailing run of True; -1 if the last is False."""
    stays = jnp.cumprod(flags[::-1].astype(jnp.int32))[::-1].astype(bool)
    return jnp.where(stays[-1], jnp.argmax(stays), -1).astype(jnp.int32)


def collapse_step(entropy: ArrayLike, fraction: float = 0.25, initial_window: int = 1) -> jax.Array:
    """First step t with H_s < fraction * H_0 for all s >= t; -1 if entropy never collapses.

    H_0 is the mean of the first ``initial_window`` values (to smooth a noisy start).

    Args:
        entropy: floating [steps] logged entropies.
        fraction: the collapse threshold as a fraction of H_0; default 0.25 (our choice).
        initial_window: how many first values H_0 averages, > 0; default 1.

    Returns:
        int32 scalar step index, or -1.
    """
    h = _curve(entropy, "entropy")
    check_positive(initial_window, "initial_window")
    h0 = h[:initial_window].mean()
    return _first_of_final_run(h < fraction * h0)
