import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.dynamics import (
    collapse_step,
    detect_stages,
    fit_entropy_performance,
    local_slope,
    plateau_start,
)


def test_fit_recovers_law_and_matches_numpy_lstsq():
    rng = np.random.default_rng(0)
    h = np.linspace(1.5, 0.2, 40)
    r = -0.2 * np.exp(h) + 0.9 + rng.normal(0, 0.01, size=40)
    fit = fit_entropy_performance(jnp.asarray(h, jnp.float32), jnp.asarray(r, jnp.float32))
    coef, intercept = np.polyfit(np.exp(h), r, 1)
    np.testing.assert_allclose([fit.a, fit.b], [-coef, intercept], rtol=1e-3)
    np.testing.assert_allclose(fit.ceiling, intercept + coef, rtol=1e-3)
    assert abs(float(fit.a) - 0.2) < 0.02 and float(fit.r2) > 0.95


def test_fit_is_jittable_and_checks_lengths():
    fit = jax.jit(fit_entropy_performance)(jnp.ones(3), jnp.ones(3))
    assert float(fit.a) == 0.0 and float(fit.r2) == 1.0  # constant data: no slope
    with pytest.raises(ValueError, match="same length"):
        fit_entropy_performance(jnp.ones(3), jnp.ones(4))


@pytest.mark.parametrize("n", [5, 6, 7, 9])
def test_constant_entropy_or_reward_is_no_slope_whatever_the_rounding(n):
    """exp(0.5) repeated n times does not average back to itself in float32 for most n: the
    fit must still see a constant, not a slope made of rounding."""
    rising = jnp.linspace(0.1, 0.5, n)
    fit = fit_entropy_performance(jnp.full(n, 0.5), rising)
    assert float(fit.a) == 0.0 and float(fit.b) == pytest.approx(float(rising.mean()))
    fit = fit_entropy_performance(jnp.linspace(0.2, 1.0, n), jnp.full(n, 0.3))
    assert float(fit.a) == 0.0 and float(fit.r2) == 1.0 and float(fit.ceiling) == pytest.approx(0.3)


def test_local_slope_vs_numpy_polyfit():
    rng = np.random.default_rng(1)
    v = rng.normal(size=30).cumsum().astype(np.float32)
    got = local_slope(jnp.asarray(v), window=3)
    for t in range(3, 27):
        want = np.polyfit(np.arange(7), v[t - 3 : t + 4], 1)[0]
        np.testing.assert_allclose(got[t], want, rtol=1e-4, atol=1e-5)


def test_stages_rising_then_plateau():
    v = np.concatenate([np.linspace(0, 1, 30), np.ones(30)]).astype(np.float32)
    stages = np.asarray(detect_stages(jnp.asarray(v), window=3))
    assert (stages[3:26] == 1).all() and (stages[34:] == 0).all()
    assert 26 <= int(plateau_start(jnp.asarray(v), window=3)) <= 34
    assert int(plateau_start(jnp.linspace(0.0, 1.0, 20), window=3)) == -1
    assert (np.asarray(detect_stages(jnp.linspace(1.0, 0.0, 20), window=3)) == -1).all()


def test_collapse_step_definition():
    h = jnp.array([2.0, 1.9, 0.4, 0.6, 0.3, 0.2])
    assert int(collapse_step(h, fraction=0.25)) == 4  # 0.6 >= 0.5 at step 3, stays below after
    assert int(collapse_step(jnp.array([2.0, 1.9, 1.0]), fraction=0.25)) == -1
    assert int(collapse_step(jnp.array([2.0, 0.1, 0.1]), fraction=0.5)) == 1
    assert int(jax.jit(collapse_step, static_argnums=(1,))(h, 0.25)) == 4
    assert int(collapse_step(jnp.array([3.0, 1.0, 0.4, 0.3]), 0.25, initial_window=2)) == 2
