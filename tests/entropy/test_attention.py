import jax
import numpy as np
import pytest

from entropix.entropy import attention_entropy, causal_mask
from tests.entropy import reference as ref

RNG = np.random.default_rng(2)
SCORES = RNG.normal(size=(2, 3, 5, 5)).astype(np.float32) * 2


def numpy_causal_attention_entropy(scores):
    b, h, tq, tk = scores.shape
    out = np.zeros((b, h, tq))
    for i in range(tq):
        p = ref.softmax(scores[..., i, : i + 1])  # query i sees keys 0..i
        out[..., i] = ref.shannon(p)
    return out


def test_from_scores_causal_matches_numpy():
    got = attention_entropy(SCORES, from_scores=True, causal=True)
    np.testing.assert_allclose(got, numpy_causal_attention_entropy(SCORES), rtol=1e-5, atol=1e-6)


def test_probs_and_scores_paths_agree():
    probs = jax.nn.softmax(np.where(causal_mask(5), SCORES, -np.inf), axis=-1)
    np.testing.assert_allclose(
        attention_entropy(probs, causal=True),
        attention_entropy(SCORES, from_scores=True, causal=True),
        rtol=1e-5,
        atol=1e-6,
    )


def test_explicit_mask_equals_causal_flag():
    mask = causal_mask(5)[None, None]
    np.testing.assert_allclose(
        attention_entropy(SCORES, mask, from_scores=True),
        attention_entropy(SCORES, from_scores=True, causal=True),
        rtol=1e-6,
    )


def test_normalized_bounds_and_uniform_attention():
    h = attention_entropy(SCORES, from_scores=True, causal=True, normalized=True)
    assert np.all((np.asarray(h) >= 0) & (np.asarray(h) <= 1 + 1e-6))
    assert np.all(np.asarray(h)[..., 0] == 0)  # first query has a single key
    uniform = attention_entropy(
        np.zeros((1, 1, 4, 4), np.float32), from_scores=True, causal=True, normalized=True
    )
    np.testing.assert_allclose(uniform[..., 1:], 1.0, rtol=1e-6)


def test_rows_with_no_key_give_zero():
    mask = np.ones((1, 1, 5, 5), bool)
    mask[..., 2, :] = False
    h = attention_entropy(SCORES[:1, :1], mask, from_scores=True)
    assert float(h[0, 0, 2]) == 0.0 and np.all(np.isfinite(h))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="must have rank 4"):
        attention_entropy(SCORES[0])
    with pytest.raises(TypeError, match="attention mask must be bool"):
        attention_entropy(SCORES, np.ones((5, 5), np.float32))
    with pytest.raises(ValueError, match="does not broadcast"):
        attention_entropy(SCORES, np.ones((4, 4), bool))
