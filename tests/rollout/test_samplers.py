"""Samplers: rules on crafted distributions, determinism under a fixed key, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.rollout import (
    SAMPLER_QUADRANTS,
    SAMPLERS,
    adaptive_temperature,
    entropy_temperature,
    entropy_varentropy,
    entropy_varentropy_quadrant,
    greedy,
    make_sampler,
    min_p,
    min_p_mask,
    temperature,
    top_k,
    top_p,
    top_p_mask,
)

PROBS = np.array([0.5, 0.3, 0.15, 0.05])
LOGITS = jnp.log(jnp.asarray(PROBS, jnp.float32))


def _draws(fn, logits, n=4000, seed=0, **params):
    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.vmap(lambda k: fn(k, logits, **params))(keys))


def test_greedy_is_argmax():
    logits = jax.random.normal(jax.random.key(0), (5, 3, 11))
    np.testing.assert_array_equal(greedy(None, logits), np.argmax(logits, -1))


def test_fixed_key_gives_identical_samples():
    logits = jax.random.normal(jax.random.key(1), (8, 50))
    for name in SAMPLERS:
        sampler = make_sampler(name)
        a = sampler(jax.random.key(7), logits)
        b = sampler(jax.random.key(7), logits)
        np.testing.assert_array_equal(a, b)
        assert a.dtype == jnp.int32 and a.shape == (8,)
    draws = _draws(temperature, logits[0], n=64)
    assert len(set(draws.tolist())) > 1  # different keys give different draws


def test_temperature_frequencies_follow_the_tempered_softmax():
    draws = _draws(temperature, LOGITS, n=20000, temperature=2.0)
    want = PROBS**0.5 / np.sum(PROBS**0.5)
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20000, want, atol=0.015)


def test_top_k_never_samples_outside_the_k():
    logits = jax.random.normal(jax.random.key(2), (64,)) * 0.1  # nearly flat
    allowed = set(np.argsort(-np.asarray(logits))[:5].tolist())
    draws = _draws(top_k, logits, k=5, temperature=3.0)
    assert set(draws.tolist()) == allowed
    assert set(_draws(top_k, logits, k=1).tolist()) == {int(np.argmax(logits))}


@pytest.mark.parametrize(
    ("p", "kept"), [(0.45, {0}), (0.79, {0, 1}), (0.81, {0, 1, 2}), (1.0, {0, 1, 2, 3})]
)
def test_top_p_boundary(p, kept):
    """Token i is kept iff the mass of the tokens ranked before it is < p."""
    np.testing.assert_array_equal(np.flatnonzero(top_p_mask(LOGITS, p)), sorted(kept))
    perm = np.array([2, 0, 3, 1])  # the rule does not depend on the vocabulary order
    mask = np.asarray(top_p_mask(LOGITS[perm], p))
    np.testing.assert_array_equal(set(perm[mask].tolist()), kept)
    assert set(_draws(top_p, LOGITS, n=2000, p=p, temperature=5.0).tolist()) == kept


def test_min_p_keeps_tokens_above_a_fraction_of_the_top_probability():
    np.testing.assert_array_equal(np.flatnonzero(min_p_mask(LOGITS, 0.25)), [0, 1, 2])
    np.testing.assert_array_equal(np.flatnonzero(min_p_mask(LOGITS, 0.61)), [0])
    assert set(_draws(min_p, LOGITS, n=2000, p_base=0.25, temperature=10.0).tolist()) == {0, 1, 2}


def test_adaptive_temperature_rule():
    sharp = np.zeros(50)
    sharp[0] = 10.0
    logits = jnp.asarray(np.stack([sharp, np.zeros(50)]), jnp.float32)
    t = np.asarray(entropy_temperature(logits, base=1.0, alpha=0.5, pivot=1.0))
    h = np.array([_entropy_varentropy_np(row)[0] for row in np.asarray(logits)])
    np.testing.assert_allclose(h[1], np.log(50), rtol=1e-6)
    np.testing.assert_allclose(t, np.exp(0.5 * np.tanh(h - 1.0)), rtol=1e-5)
    assert t[0] < 1.0 < t[1]  # confident token cooled, uncertain token heated
    draws = _draws(adaptive_temperature, logits, n=500)
    assert np.mean(draws[:, 0] == 0) > 0.99
    assert len(set(draws[:, 1].tolist())) > 20


def _entropy_varentropy_np(logits):
    p = np.exp(logits - logits.max()) / np.sum(np.exp(logits - logits.max()))
    surprise = -np.log(p)
    h = np.sum(p * surprise)
    return h, np.sum(p * (surprise - h) ** 2)


def test_entropy_varentropy_quadrants_on_crafted_distributions():
    tail = np.zeros(200)
    rows = {
        "confident": np.concatenate([[14.0], tail]),  # one dominant token: low H, low V
        "rivals": np.concatenate([[8.0], np.linspace(0, -0.5, 200)]),  # peak + long tail: high V
        "explore": np.concatenate([[0.0], tail]),  # uniform: high H, zero V
        "careful": np.concatenate([[4.0], tail]),  # high H, high V
    }
    logits = jnp.asarray(np.stack(list(rows.values())), jnp.float32)
    quadrant = np.asarray(entropy_varentropy_quadrant(logits, h_thr=1.0, v_thr=1.5))
    for i, (name, row) in enumerate(rows.items()):
        h, v = _entropy_varentropy_np(row)
        assert SAMPLER_QUADRANTS[2 * int(h >= 1.0) + int(v >= 1.5)] == name
        assert SAMPLER_QUADRANTS[quadrant[i]] == name
    draws = _draws(entropy_varentropy, logits, n=300)
    assert np.all(draws[:, 0] == 0)  # confident -> greedy
    assert set(draws[:, 1].tolist()) <= {0, 1, 2, 3, 4}  # rivals -> top-5
    assert len(set(draws[:, 2].tolist())) > 10  # explore: spread over the flat vocabulary


def test_make_sampler_is_hashable_and_validates():
    a, b = (
        make_sampler("top_p", p=0.8, temperature=0.7),
        make_sampler("top_p", temperature=0.7, p=0.8),
    )
    assert a == b and hash(a) == hash(b)
    logits = jax.random.normal(jax.random.key(3), (4, 20))
    np.testing.assert_array_equal(
        a(jax.random.key(0), logits), top_p(jax.random.key(0), logits, 0.8, 0.7)
    )
    with pytest.raises(ValueError, match="sampler='nucleus'"):
        make_sampler("nucleus")
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['q'\]"):
        make_sampler("top_p", q=0.9)
    with pytest.raises(TypeError, match="logits must be a floating"):
        greedy(None, jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="p must be in"):
        top_p(jax.random.key(0), logits, p=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        temperature(jax.random.key(0), logits, temperature=0.0)
