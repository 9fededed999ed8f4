import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.dynamics import ceiling_interval, fit_entropy_performance, live_ceiling


def _reference(h, r, z=1.96):
    """numpy.polyfit and the textbook standard error of the mean response at x0 = 1."""
    x = np.exp(h)
    slope, intercept = np.polyfit(x, r, 1)
    n = len(x)
    s = np.sqrt(np.sum((r - (slope * x + intercept)) ** 2) / (n - 2))
    se = s * np.sqrt(1 / n + (1 - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
    ceiling = slope + intercept
    return ceiling, ceiling - z * se, ceiling + z * se


def _law(n, seed=0, noise=0.02):
    rng = np.random.default_rng(seed)
    h = np.linspace(1.2, 0.3, n) + rng.normal(0, 0.05, n)
    return h, -0.3 * np.exp(h) + 1.1 + rng.normal(0, noise, n)


def test_ceiling_interval_matches_polyfit_and_textbook_formula():
    h, r = _law(30)
    got = ceiling_interval(jnp.asarray(h, jnp.float32), jnp.asarray(r, jnp.float32), z=2.5)
    np.testing.assert_allclose(got, _reference(h, r, z=2.5), rtol=1e-4)
    fit = fit_entropy_performance(jnp.asarray(h, jnp.float32), jnp.asarray(r, jnp.float32))
    np.testing.assert_allclose(got.ceiling, fit.ceiling, rtol=1e-6)
    assert got.lower < 0.8 < got.upper  # the true ceiling -0.3 + 1.1


def test_live_ceiling_is_the_fit_on_each_prefix():
    h, r = _law(12, seed=1)
    live = jax.jit(live_ceiling)(jnp.asarray(h, jnp.float32), jnp.asarray(r, jnp.float32))
    assert all(v.shape == (12,) for v in live)
    assert np.isnan(np.asarray(live.ceiling[:2])).all()
    for k in range(3, 13):
        np.testing.assert_allclose(
            [v[k - 1] for v in live], _reference(h[:k], r[:k]), rtol=1e-3, atol=1e-5
        )


def test_exact_line_has_zero_width_and_small_n_is_refused():
    h = jnp.linspace(0.2, 1.5, 8)
    r = -0.4 * jnp.exp(h) + 0.9
    c = ceiling_interval(h, r)
    np.testing.assert_allclose([c.ceiling, c.lower, c.upper], [0.5, 0.5, 0.5], atol=1e-5)
    assert float(ceiling_interval(jnp.ones(4), jnp.arange(4.0)).upper) == np.inf  # no slope
    flat = ceiling_interval(jnp.full(6, 0.5), jnp.full(6, 0.3))  # exp(0.5)'s mean rounds off
    assert [float(flat.ceiling), float(flat.upper)] == [pytest.approx(0.3), np.inf]
    live = live_ceiling(jnp.array([0.5, 0.5, 0.5, 0.4, 0.3]), jnp.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert float(live.upper[2]) == np.inf and np.isfinite(live.upper[3:]).all()
    with pytest.raises(ValueError, match=r"needs >= 3 \(entropy, reward\) points; got 2"):
        ceiling_interval(jnp.ones(2), jnp.ones(2))
    with pytest.raises(ValueError, match="needs >= 3"):
        live_ceiling(jnp.ones(2), jnp.ones(2))
    with pytest.raises(ValueError, match="same length"):
        ceiling_interval(jnp.ones(3), jnp.ones(4))
