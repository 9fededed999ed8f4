import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from entropix.entropy import (
    entropy_from_probs,
    log_softmax,
    renyi_entropy,
    shannon_entropy,
    tsallis_entropy,
    varentropy,
)
from tests.entropy import reference as ref

RNG = np.random.default_rng(0)
LOGITS = (RNG.normal(size=(3, 5, 11)) * 3).astype(np.float32)

logit_rows = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=2, max_side=12),
    elements=st.floats(-30, 30, width=32),
)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_shannon_matches_numpy(temperature):
    got = shannon_entropy(LOGITS, temperature)
    np.testing.assert_allclose(
        got, ref.shannon(ref.softmax(LOGITS, temperature)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("q", [0.3, 0.5, 0.995, 1.004, 2.0, 3.5])
def test_tsallis_matches_numpy(q):
    got = tsallis_entropy(LOGITS, q)
    np.testing.assert_allclose(got, ref.tsallis(ref.softmax(LOGITS), q), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.997, 1.003, 2.0, 7.0, float("inf")])
def test_renyi_matches_numpy(alpha):
    got = renyi_entropy(LOGITS, alpha)
    np.testing.assert_allclose(got, ref.renyi(ref.softmax(LOGITS), alpha), rtol=1e-4, atol=1e-5)


def test_varentropy_matches_numpy():
    np.testing.assert_allclose(
        varentropy(LOGITS, 0.7), ref.varentropy(ref.softmax(LOGITS, 0.7)), rtol=1e-4, atol=1e-6
    )


def test_exact_limit_at_one_equals_shannon():
    h = shannon_entropy(LOGITS)
    np.testing.assert_allclose(tsallis_entropy(LOGITS, 1.0), h, rtol=1e-6)
    np.testing.assert_allclose(renyi_entropy(LOGITS, 1.0), h, rtol=1e-6)


def test_tsallis_and_renyi_are_smooth_and_differentiable_through_q_equal_one():
    qs = jnp.linspace(0.97, 1.03, 13)
    s = jax.vmap(lambda q: tsallis_entropy(LOGITS[0, 0], q))(qs)
    r = jax.vmap(lambda a: renyi_entropy(LOGITS[0, 0], a))(qs)
    # second differences of a smooth curve are tiny compared to the values
    assert np.max(np.abs(np.diff(np.asarray(s), 2))) < 1e-4
    assert np.max(np.abs(np.diff(np.asarray(r), 2))) < 1e-4
    g = jax.grad(lambda q: tsallis_entropy(LOGITS[0, 0], q))(1.0)
    # dS_q/dq at q=1 equals -(Var(log p) + H^2)/2 (second-order expansion of sum p^q)
    p = ref.softmax(LOGITS[0, 0])
    expected = -(ref.varentropy(p) + ref.shannon(p) ** 2) / 2
    np.testing.assert_allclose(g, expected, rtol=1e-3)


def test_masked_logits_behave_like_smaller_vocabulary():
    z = LOGITS[0, 0].copy()
    masked = z.copy()
    masked[5:] = -np.inf
    for fn, arg in [(tsallis_entropy, 2.0), (renyi_entropy, 0.5), (renyi_entropy, 0.0)]:
        np.testing.assert_allclose(fn(masked, arg), fn(z[:5], arg), rtol=1e-5)
    np.testing.assert_allclose(shannon_entropy(masked), shannon_entropy(z[:5]), rtol=1e-6)
    grads = jax.grad(lambda x: shannon_entropy(x) + varentropy(x) + tsallis_entropy(x, 0.5))(
        jnp.asarray(masked)
    )
    assert np.all(np.isfinite(grads))


def test_shannon_derivatives_match_finite_differences():
    """The custom JVP of shannon_entropy, in reverse and forward mode, in the logits and the
    temperature, against central differences of the numpy entropy (float64); -inf classes get
    a zero gradient and a finite forward-mode temperature derivative."""
    z = LOGITS[0].astype(np.float64)
    weights = RNG.normal(size=len(z))
    eps = 1e-4

    def np_h(logits, temperature=0.7):
        return weights @ ref.shannon(ref.softmax(logits, temperature))

    want = np.zeros_like(z)
    for index in np.ndindex(*z.shape):
        step = np.zeros_like(z)
        step[index] = eps
        want[index] = (np_h(z + step) - np_h(z - step)) / (2 * eps)

    def weighted(logits, temperature=0.7):
        return jnp.sum(jnp.asarray(weights, jnp.float32) * shannon_entropy(logits, temperature))

    logits = jnp.asarray(z, jnp.float32)
    np.testing.assert_allclose(jax.grad(weighted)(logits), want, rtol=1e-3, atol=1e-5)
    tangent = RNG.normal(size=z.shape).astype(np.float32)
    _, forward = jax.jvp(weighted, (logits,), (jnp.asarray(tangent),))
    np.testing.assert_allclose(forward, np.sum(want * tangent), rtol=1e-4, atol=1e-5)
    d_temperature = (np_h(z, 0.7 + eps) - np_h(z, 0.7 - eps)) / (2 * eps)
    got = jax.grad(weighted, argnums=1)(logits, 0.7)
    np.testing.assert_allclose(got, d_temperature, rtol=1e-3, atol=1e-5)

    masked = logits.at[:, :3].set(-jnp.inf)
    grad = jax.grad(weighted)(masked)
    assert np.all(np.isfinite(grad)) and np.all(grad[:, :3] == 0)
    _, forward_t = jax.jvp(lambda t: weighted(masked, t), (0.7,), (1.0,))
    assert np.isfinite(forward_t)


def test_bf16_input_is_accumulated_in_fp32():
    z = jnp.asarray(LOGITS, jnp.bfloat16)
    out = shannon_entropy(z)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref.shannon(ref.softmax(np.asarray(z, np.float32))), rtol=1e-5)


def test_entropy_from_probs_handles_zeros():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(entropy_from_probs(p), [np.log(2), 0.0], atol=1e-7)


def test_log_softmax_temperature():
    np.testing.assert_allclose(
        np.exp(log_softmax(LOGITS, 2.0)), ref.softmax(LOGITS, 2.0), rtol=1e-5, atol=1e-7
    )


@settings(max_examples=25, deadline=None)
@given(logit_rows)
def test_shannon_bounds(z):
    h = np.asarray(shannon_entropy(z))
    assert np.all(h >= -1e-5)
    assert np.all(h <= np.log(z.shape[-1]) + 1e-4)


@settings(max_examples=12, deadline=None)
@given(logit_rows, st.floats(0.1, 5.0))
def test_renyi_non_increasing_in_order(z, base):
    orders = [base, base + 0.5, base + 2.0, float("inf")]
    values = [np.asarray(renyi_entropy(z, a)) for a in orders]
    for lo, hi in zip(values[1:], values[:-1], strict=True):
        assert np.all(lo <= hi + 1e-4 * (1 + np.abs(hi)))


@settings(max_examples=20, deadline=None)
@given(logit_rows)
def test_generalised_entropies_tend_to_shannon(z):
    h = np.asarray(shannon_entropy(z))
    for d in (1e-3, -1e-3, 2e-2):
        np.testing.assert_allclose(tsallis_entropy(z, 1 + d), h, atol=0.05 * abs(d) * 100 + 1e-3)
        np.testing.assert_allclose(renyi_entropy(z, 1 + d), h, atol=0.05 * abs(d) * 100 + 1e-3)


@settings(max_examples=10, deadline=None)
@given(logit_rows, st.randoms(use_true_random=False))
def test_permutation_invariance(z, rnd):
    perm = list(range(z.shape[-1]))
    rnd.shuffle(perm)
    zp = z[..., perm]
    for fn in (
        shannon_entropy,
        varentropy,
        lambda x: tsallis_entropy(x, 2.0),
        lambda x: renyi_entropy(x, 3.0),
    ):
        np.testing.assert_allclose(fn(zp), fn(z), rtol=1e-4, atol=1e-5)


def test_bad_input_errors():
    with pytest.raises(TypeError, match="logits must be a floating-point array"):
        shannon_entropy(jnp.arange(5))
    with pytest.raises(ValueError, match="logits must have rank >= 1"):
        shannon_entropy(jnp.float32(1.0))
    with pytest.raises(ValueError, match="q must be > 0"):
        tsallis_entropy(LOGITS, 0.0)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        renyi_entropy(LOGITS, -1.0)
