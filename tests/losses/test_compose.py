"""compose / Term / Selector: weighting, aggregation, selection, detaching, metrics, errors;
and the rank/quantile selection utilities, each against a numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.losses import (
    Selector,
    Term,
    all_tokens,
    compose,
    fraction_count,
    make_policy_batch,
    negative_advantage,
    positive_advantage,
    quantile_mask,
    top_k_mask,
)
from entropix.losses.selectors import masked_quantile, order_statistic

B, T = 4, 6


def _batch(seed=0, logp=None):
    rng = np.random.default_rng(seed)
    mask = rng.random((B, T)) > 0.3
    mask[0] = False  # one padding-only row
    drawn = jnp.asarray(rng.normal(size=(B, T)), jnp.float32)
    return make_policy_batch(
        drawn if logp is None else logp,
        jnp.asarray(rng.normal(size=(B, T)), jnp.float32),
        jnp.asarray(mask, jnp.float32),
        entropy=jnp.asarray(rng.random((B, T)) * 3, jnp.float32),
    )


def _values_term(name="v", coef=1.0, **kw):
    """A per-token term whose values are logp^2 (so gradients are 2 logp)."""

    def fn(batch, mask):
        return batch.logp**2, {"mask_sum": jnp.sum(mask)}

    return Term(name, fn, coef=coef, **kw)


def _np_aggregate(x, m, mode, norm=None):
    x, m = np.asarray(x, np.float64), np.asarray(m, np.float64)
    if mode == "token-mean":
        return (x * m).sum() / m.sum()
    rows = m.sum(1) > 0
    if mode == "seq-mean-token-mean":
        per = (x * m).sum(1)[rows] / m.sum(1)[rows]
    elif mode == "seq-mean-token-sum":
        per = (x * m).sum(1)[rows]
    else:
        per = (x * m).sum(1)[rows] / (x.shape[1] if norm is None else norm)
    return per.mean()


@pytest.mark.parametrize(
    "mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
)
def test_aggregation_modes_match_numpy(mode):
    batch = _batch()
    loss, metrics = compose(_values_term(), aggregate=mode)(batch)
    want = _np_aggregate(np.asarray(batch.logp) ** 2, batch.mask, mode)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["v/loss"], want, rtol=1e-5)


def test_norm_is_passed_to_seq_mean_token_sum_norm():
    batch = _batch()
    loss, _ = compose(_values_term(), aggregate="seq-mean-token-sum-norm", norm=100.0)(batch)
    want = _np_aggregate(np.asarray(batch.logp) ** 2, batch.mask, "seq-mean-token-sum-norm", 100.0)
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_terms_are_weighted_and_metrics_prefixed():
    batch = _batch()

    def scalar(batch, mask):
        return jnp.sum(mask), {"n": jnp.sum(mask)}

    loss_fn = compose(
        _values_term("a", coef=0.5),
        _values_term("b", coef=2.0, aggregate="seq-mean-token-sum"),
        Term("c", scalar, coef=-1.0, per_token=False),
    )
    loss, metrics = loss_fn(batch)
    x, m = np.asarray(batch.logp) ** 2, np.asarray(batch.mask)
    a = _np_aggregate(x, m, "token-mean")
    b = _np_aggregate(x, m, "seq-mean-token-sum")
    np.testing.assert_allclose(loss, 0.5 * a + 2.0 * b - m.sum(), rtol=1e-5)
    assert set(metrics) == {"loss", "a/loss", "a/mask_sum", "b/loss", "b/mask_sum", "c/loss", "c/n"}
    np.testing.assert_allclose(metrics["loss"], loss)
    np.testing.assert_allclose(metrics["b/loss"], b, rtol=1e-5)


def test_where_restricts_the_token_set_and_selectors_compose():
    batch = _batch(1)
    adv = np.asarray(batch.advantages)
    high_entropy = Selector("hi", lambda b: b.entropy > 1.5)
    cases = {
        "pos": (positive_advantage(), adv > 0),
        "neg_or_hi": (
            negative_advantage() | high_entropy,
            (adv < 0) | (np.asarray(batch.entropy) > 1.5),
        ),
        "pos_and_not_hi": (
            positive_advantage() & ~high_entropy,
            (adv > 0) & ~(np.asarray(batch.entropy) > 1.5),
        ),
        "all": (all_tokens(), np.ones((B, T), bool)),
    }
    x, m = np.asarray(batch.logp) ** 2, np.asarray(batch.mask) > 0
    for name, (selector, rule) in cases.items():
        np.testing.assert_array_equal(np.asarray(selector(batch)) & m, rule & m, err_msg=name)
        loss, metrics = compose(_values_term().where(selector))(batch)
        np.testing.assert_allclose(loss, x[rule & m].mean(), rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(metrics["v/mask_sum"], (rule & m).sum(), err_msg=name)
    twice = _values_term().where(positive_advantage()).where(high_entropy)
    loss, _ = compose(twice)(batch)
    np.testing.assert_allclose(
        loss, x[(adv > 0) & (np.asarray(batch.entropy) > 1.5) & m].mean(), rtol=1e-5
    )


def test_detach_where_keeps_value_and_stops_gradient_of_selected_tokens():
    batch = _batch(2)
    detach = positive_advantage()
    loss_fn = compose(_values_term().detach_where(detach))
    plain = compose(_values_term())

    def loss_of(lp, fn):
        return fn(_batch(2, logp=lp))[0]

    lp = batch.logp
    np.testing.assert_allclose(loss_of(lp, loss_fn), loss_of(lp, plain), rtol=1e-6)
    grad = np.asarray(jax.grad(loss_of)(lp, loss_fn))
    m = np.asarray(batch.mask)
    want = np.where(np.asarray(batch.advantages) > 0, 0.0, 2 * np.asarray(lp) * m / m.sum())
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


def test_compose_is_jittable_and_builders_return_new_terms():
    batch = _batch(3)
    term = _values_term()
    renamed = term.named("w").with_coef(3.0)
    assert (term.name, term.coef) == ("v", 1.0) and (renamed.name, renamed.coef) == ("w", 3.0)
    loss_fn = compose(term, renamed)
    eager, _ = loss_fn(batch)
    jitted, _ = jax.jit(loss_fn)(batch)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    np.testing.assert_allclose(eager, 4.0 * compose(term)(batch)[0], rtol=1e-6)


def test_fully_masked_batch_gives_zero_not_nan():
    batch = _batch()
    empty = make_policy_batch(batch.logp, batch.advantages, jnp.zeros((B, T)))
    loss, _ = compose(_values_term())(empty)
    assert float(loss) == 0.0


def test_compose_errors():
    with pytest.raises(ValueError, match="at least one term"):
        compose()
    with pytest.raises(TypeError, match="compose takes Term objects"):
        compose(lambda b: 0.0)
    with pytest.raises(ValueError, match=r"duplicate term names \['v'\]"):
        compose(_values_term(), _values_term())
    with pytest.raises(ValueError, match="aggregate='mean' is not one of"):
        compose(_values_term(), aggregate="mean")
    with pytest.raises(ValueError, match="v: aggregate='sum' is not one of"):
        _values_term(aggregate="sum")
    bad_shape = Term("bad", lambda b, m: (jnp.ones(3), {}), per_token=False)
    with pytest.raises(ValueError, match="per_token=False but returned shape"):
        compose(bad_shape)(_batch())
    bad_selector = Selector("short", lambda b: jnp.ones((B, T - 1), bool))
    with pytest.raises(ValueError, match="selector 'short' returned shape"):
        compose(_values_term().where(bad_selector))(_batch())
    scalar = Term("s", lambda b, m: (jnp.float32(1), {}), per_token=False)
    with pytest.raises(ValueError, match="detach_where needs a per-token term"):
        compose(scalar.detach_where(all_tokens()))(_batch())


def _np_top_k(scores, valid, k):
    flat, ok = np.asarray(scores).ravel(), np.asarray(valid).ravel() > 0
    idx = [i for i in np.argsort(-flat, kind="stable") if ok[i]][:k]
    out = np.zeros(flat.size, bool)
    out[idx] = True
    return out.reshape(np.shape(scores))


def test_top_k_mask_fraction_count_and_quantile_mask_match_numpy():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(5, 7)).astype(np.float32)
    scores[1, 2] = scores[3, 4] = scores[0, 0]  # ties resolve to the earlier flat index
    valid = rng.random((5, 7)) > 0.4
    for k in (0, 1, 3, 10, 35):
        np.testing.assert_array_equal(top_k_mask(scores, valid, k), _np_top_k(scores, valid, k))
    jitted = jax.jit(top_k_mask)(scores, valid, jnp.int32(4))
    np.testing.assert_array_equal(jitted, _np_top_k(scores, valid, 4))
    for frac, n, want in [(0.2, 10, 2), (0.2, 4, 1), (2e-4, 100, 1), (0.5, 0, 0), (1.0, 7, 7)]:
        assert int(fraction_count(frac, jnp.int32(n))) == want
    for q in (0.0, 0.3, 0.8, 1.0):
        want = valid & (scores >= np.quantile(scores[valid], q))
        np.testing.assert_array_equal(quantile_mask(scores, valid, q), want)
    assert not np.any(quantile_mask(scores, np.zeros_like(valid), 0.5))


def test_radix_selection_on_large_arrays_matches_numpy():
    """Arrays far larger than one radix digit (2^11 buckets), with long runs of ties, so every
    round of the k-th-value search and the tie-breaking search by position are exercised."""
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(6, 1500)).astype(np.float32)
    scores[:, ::3] = np.round(scores[:, ::3], 1)  # ties, some of them across many positions
    scores[2] = 0.5  # one row entirely tied
    valid = rng.random(scores.shape) > 0.1
    n = int(valid.sum())
    for k in (1, 7, 2048, 2049, n // 2, n - 1, n):
        np.testing.assert_array_equal(
            top_k_mask(scores, valid, k), _np_top_k(scores, valid, k), err_msg=f"k={k}"
        )
    values = np.sort(scores[valid])
    ranks = np.array([0, 1, 2047, 2048, n // 3, n - 1])
    np.testing.assert_array_equal(order_statistic(scores, valid, ranks), values[ranks])


@pytest.mark.parametrize("seed", range(6))
def test_sort_free_selection_matches_sorting_on_ties_zeros_and_infinities(seed):
    rng = np.random.default_rng(100 + seed)
    # few distinct values (many ties), signed zeros, infinities, large and tiny magnitudes
    pool = np.array([-np.inf, -3e30, -1.5, -0.0, 0.0, 1e-30, 0.25, 0.25, 2.0, 7e20, np.inf])
    scores = rng.choice(pool, size=(6, 9)).astype(np.float32)
    valid = rng.random((6, 9)) > 0.3
    finite_valid = valid & np.isfinite(scores)
    for k in (1, 2, 5, 17, int(valid.sum())):
        np.testing.assert_array_equal(
            top_k_mask(scores, valid, k), _np_top_k(scores, valid, k), err_msg=f"k={k}"
        )
    values = np.sort(scores[finite_valid].astype(np.float64))
    for rank in (0, len(values) // 2, len(values) - 1):
        assert float(order_statistic(scores, finite_valid, rank)) == values[rank]
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        want = np.quantile(scores[finite_valid], q)
        np.testing.assert_allclose(masked_quantile(scores, finite_valid, q), want, rtol=1e-5)
    qs = (0.0, 0.1, 0.5, 0.9, 1.0)
    np.testing.assert_array_equal(  # several quantiles from one search: the same numbers
        masked_quantile(scores, finite_valid, qs),
        [masked_quantile(scores, finite_valid, q) for q in qs],
    )
    assert np.isnan(masked_quantile(scores, np.zeros_like(valid), 0.5))
    assert np.all(np.isnan(masked_quantile(scores, np.zeros_like(valid), (0.2, 0.8))))
