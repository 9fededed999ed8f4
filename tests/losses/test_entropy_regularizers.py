"""Entropy regularisers and covariance / probability-based interventions (entropy bonus and its
adaptive coefficient, Clip-Cov, KL-Cov, forking tokens, SIREN, Lp-Reg, AEPO, EPO, BAPO, SPINE)
against numpy references written from their formulas:
values, gradients (analytic or float64 finite differences of the reference) and, for the
selection methods, the exact selected token set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.entropy import top_p_entropy
from entropix.losses import (
    adaptive_entropy_bonus,
    aepo,
    aepo_temperature,
    bapo,
    bapo_clip_bounds,
    clip_cov,
    clip_cov_selector,
    compose,
    entropy_bonus,
    epo_phase_weight,
    epo_smoothing,
    forking_tokens,
    kl_cov,
    kl_cov_selector,
    lp_reg,
    make_policy_batch,
    peak_entropy_mask,
    ppo_clip,
    siren,
    spine,
)

B, T, V = 4, 10, 9


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of a float64 numpy function f at x."""
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_top_k(scores, valid, k):
    """Bool mask of the k valid entries with the largest scores (ties: earlier flat index)."""
    flat, ok = np.asarray(scores, np.float64).ravel(), np.asarray(valid).ravel() > 0
    chosen = [i for i in np.argsort(-flat, kind="stable") if ok[i]][:k]
    out = np.zeros(flat.size, bool)
    out[chosen] = True
    return out.reshape(np.shape(scores))


def np_count(fraction, n):
    return 0 if n == 0 else max(1, int(np.floor(np.float32(fraction) * np.float32(n))))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(B, T, V)) * 2.0).astype(np.float32)
    tokens = rng.integers(0, V, size=(B, T))
    logp = np.log(np.take_along_axis(np_softmax(logits), tokens[..., None], -1)[..., 0])
    mask = rng.random((B, T)) > 0.15
    mask[:, 0] = True
    return {
        "logits": logits,
        "logp": logp.astype(np.float32),
        "old_logp": (logp + rng.normal(0, 0.3, size=(B, T))).astype(np.float32),
        "advantages": rng.normal(size=(B, T)).astype(np.float32),
        "entropy": (rng.random((B, T)) * 3).astype(np.float32),
        "mask": mask.astype(np.float32),
        "rewards": rng.integers(0, 2, size=B).astype(np.float32),
    }


def _batch(d, **overrides):
    d = {**d, **overrides}
    return make_policy_batch(
        jnp.asarray(d["logp"]),
        jnp.asarray(d["advantages"]),
        jnp.asarray(d["mask"]),
        old_logp=jnp.asarray(d["old_logp"]),
        entropy=jnp.asarray(d["entropy"]),
        logits=jnp.asarray(d["logits"]),
        rewards=jnp.asarray(d["rewards"]),
        key=d.get("key"),
        controls=d.get("controls"),
    )


def _np_cov(d):
    m = d["mask"] > 0
    lp, a = d["logp"].astype(np.float64), d["advantages"].astype(np.float64)
    return (lp - lp[m].mean()) * (a - a[m].mean())


# --- entropy bonus -------------------------------------------------------------------------


def test_ref_entropy_bonus():
    d = _data(0)
    m, n = d["mask"], d["mask"].sum()

    def loss(h):
        return compose(entropy_bonus(coef=1e-2))(_batch(d, entropy=h))

    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(d["entropy"]))
    np.testing.assert_allclose(metrics["entropy/loss"], -(d["entropy"] * m).sum() / n, rtol=1e-5)
    np.testing.assert_allclose(value, -1e-2 * (d["entropy"] * m).sum() / n, rtol=1e-5)
    np.testing.assert_allclose(grad, -1e-2 * m / n, rtol=1e-5)
    with pytest.raises(ValueError, match=r"entropy_bonus needs PolicyBatch\.entropy"):
        compose(entropy_bonus())(make_policy_batch(jnp.zeros((2, 3)), jnp.ones(2)))


def test_ref_adaptive_entropy_bonus():
    d = _data(0)
    m, n, alpha = d["mask"], d["mask"].sum(), 0.037
    controls = {"entropy_coef": jnp.float32(alpha)}
    term = adaptive_entropy_bonus()
    assert term.controls == ("entropy_coef",)

    def loss(h):
        return compose(term)(_batch(d, entropy=h, controls=controls))

    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(d["entropy"]))
    np.testing.assert_allclose(value, -alpha * (d["entropy"] * m).sum() / n, rtol=1e-5)
    np.testing.assert_allclose(metrics["adaptive_entropy/coef"], alpha, rtol=1e-6)
    np.testing.assert_allclose(grad, -alpha * m / n, rtol=1e-5)
    with pytest.raises(ValueError, match=r"controls\['entropy_coef'\]"):
        compose(term)(_batch(d))


# --- Clip-Cov / KL-Cov ----------------------------------------------------------------------


def test_ref_clip_cov():
    d = _data(1)
    key = jax.random.key(7)
    ratio, lo, hi = 0.1, 0.05, 1.0
    cov = _np_cov(d)
    valid = d["mask"] > 0
    band = valid & (cov >= lo) & (cov <= hi)
    u = np.asarray(jax.random.uniform(key, (B, T)))
    k = np_count(ratio, valid.sum())
    assert band.sum() > k  # the random choice matters in this fixture
    want = np_top_k(-u, band, k)
    selected = np.asarray(clip_cov_selector(ratio, lo, hi)(_batch(d, key=key)))
    np.testing.assert_array_equal(selected, want)
    assert selected.sum() == k and np.all(band[selected])

    def loss(lp, term):
        return compose(term)(_batch(d, logp=lp, key=key))[0]

    lp = jnp.asarray(d["logp"])
    term = clip_cov(ppo_clip(), ratio, lo, hi)
    np.testing.assert_allclose(loss(lp, term), loss(lp, ppo_clip()), rtol=1e-6)
    grad = np.asarray(jax.grad(loss)(lp, term))
    plain = np.asarray(jax.grad(loss)(lp, ppo_clip()))
    np.testing.assert_array_equal(grad[want], 0.0)
    np.testing.assert_allclose(grad[~want], plain[~want], rtol=1e-6)
    other = np.asarray(clip_cov_selector(ratio, lo, hi)(_batch(d, key=jax.random.key(8))))
    assert other.sum() == k and not np.array_equal(other, want)


def test_clip_cov_picks_whole_band_when_small_and_validates():
    d = _data(2)
    cov = _np_cov(d)
    valid = d["mask"] > 0
    top3 = np.sort(cov[valid])[-3:]
    lo = float(top3[:2].mean())  # exactly two tokens in [lo, inf)
    selected = clip_cov_selector(0.9, lo, 1e9)(_batch(d, key=jax.random.key(0)))
    np.testing.assert_array_equal(selected, valid & (cov >= lo))
    with pytest.raises(ValueError, match="need omega_low <= omega_high"):
        clip_cov_selector(0.1, 2.0, 1.0)
    with pytest.raises(ValueError, match="ratio is a fraction"):
        clip_cov(ratio=1.5)
    with pytest.raises(ValueError, match=r"clip_cov needs PolicyBatch\.key"):
        compose(clip_cov())(_batch(d))


def test_ref_kl_cov():
    d = _data(3)
    ratio, coef = 0.15, 0.7
    valid = d["mask"] > 0
    want = np_top_k(_np_cov(d), valid, np_count(ratio, valid.sum()))
    np.testing.assert_array_equal(kl_cov_selector(ratio)(_batch(d)), want)

    def loss(lp):
        return compose(kl_cov(ratio, coef))(_batch(d, logp=lp))

    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(d["logp"]))
    log_ratio = d["logp"].astype(np.float64) - d["old_logp"]
    n = valid.sum()
    np.testing.assert_allclose(value, coef * np.abs(log_ratio)[want].sum() / n, rtol=1e-5)
    np.testing.assert_allclose(metrics["kl_cov/selected_fraction"], want.sum() / n, rtol=1e-6)
    np.testing.assert_allclose(grad, coef * np.sign(log_ratio) * want / n, rtol=1e-5)
    # Composed with the surrogate it is the paper's per-token objective.
    both, _ = compose(ppo_clip(), kl_cov(ratio, coef))(_batch(d))
    pg, _ = compose(ppo_clip())(_batch(d))
    np.testing.assert_allclose(both, pg + value, rtol=1e-5)
    with pytest.raises(ValueError, match="ratio must be > 0"):
        kl_cov(ratio=0.0)


# --- forking tokens ------------------------------------------------------------------------


def test_ref_forking_tokens():
    d = _data(4)
    d["entropy"][1, 3] = d["entropy"][2, 5] = d["entropy"][0, 0]  # ties: earlier index wins
    valid = d["mask"] > 0
    want = np_top_k(d["entropy"], valid, np_count(0.2, valid.sum()))
    selected = np.asarray(forking_tokens(0.2)(_batch(d)))
    np.testing.assert_array_equal(selected, want)
    assert selected.sum() == int(np.floor(0.2 * valid.sum()))
    assert d["entropy"][selected].min() >= d["entropy"][valid & ~selected].max()

    def loss(lp):
        return compose(ppo_clip().where(forking_tokens(0.2)))(_batch(d, logp=lp))[0]

    lp = jnp.asarray(d["logp"])
    r = np.exp(d["logp"].astype(np.float64) - d["old_logp"])
    a = d["advantages"]
    surrogate = np.maximum(-a * r, -a * np.clip(r, 0.8, 1.28))
    surrogate = np.where((a < 0) & (surrogate > -3 * a), -3 * a, surrogate)
    np.testing.assert_allclose(loss(lp), surrogate[want].mean(), rtol=1e-5)
    grad = np.asarray(jax.grad(loss)(lp))
    np.testing.assert_array_equal(grad[~want], 0.0)
    with pytest.raises(ValueError, match="rho is a fraction"):
        forking_tokens(1.2)


# --- SIREN ---------------------------------------------------------------------------------


def np_top_p_entropy(logits, top_p):
    p = np_softmax(logits)
    order = np.argsort(-p, axis=-1, kind="stable")
    ps = np.take_along_axis(p, order, -1)
    keep = (np.cumsum(ps, -1) - ps) < top_p
    q = np.where(keep, ps, 0.0)
    q = q / q.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(q > 0, q * np.log(q), 0.0), -1)


def test_top_p_entropy_matches_numpy_and_limits():
    d = _data(5)
    for top_p in (0.3, 0.8, 1.0):
        np.testing.assert_allclose(
            top_p_entropy(d["logits"], top_p),
            np_top_p_entropy(d["logits"], top_p),
            rtol=1e-4,
            atol=1e-5,
        )
    full = -np.sum(np_softmax(d["logits"]) * np.log(np_softmax(d["logits"])), -1)
    np.testing.assert_allclose(top_p_entropy(d["logits"], 1.0), full, rtol=1e-4)
    tiny = np.asarray(top_p_entropy(d["logits"], 1e-3))
    np.testing.assert_allclose(tiny, 0.0, atol=1e-6)  # nucleus = the arg-max class only


def test_ref_siren():
    d = _data(6)
    coef, top_p, q, anchor = 5e-3, 0.8, 0.8, 1.0
    valid = d["mask"] > 0
    h_p = np_top_p_entropy(d["logits"], top_p)
    peak = valid & (h_p >= np.quantile(h_p[valid], q))
    controls = {"entropy_anchor": jnp.float32(anchor)}
    np.testing.assert_array_equal(peak_entropy_mask(q, top_p)(_batch(d)), peak)

    def ref(z):
        return coef * (np_top_p_entropy(z, top_p)[peak].mean() - anchor) ** 2

    def loss(z):
        return compose(siren(coef, top_p, q))(_batch(d, logits=z, controls=controls))

    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(d["logits"]))
    np.testing.assert_allclose(value, ref(d["logits"]), rtol=1e-4)
    np.testing.assert_allclose(metrics["siren/entropy"], h_p[peak].mean(), rtol=1e-5)
    np.testing.assert_allclose(
        metrics["siren/selected_fraction"], peak.sum() / valid.sum(), rtol=1e-6
    )
    np.testing.assert_allclose(grad, numeric_grad(ref, d["logits"]), rtol=2e-3, atol=1e-6)
    with pytest.raises(ValueError, match=r"siren needs PolicyBatch\.controls\['entropy_anchor'\]"):
        compose(siren())(_batch(d))
    with pytest.raises(ValueError, match="top_p must be in"):
        siren(top_p=1.5)
    no_logits = make_policy_batch(jnp.zeros((2, 3)), jnp.ones(2), controls=controls)
    with pytest.raises(ValueError, match=r"siren needs PolicyBatch\.logits"):
        compose(siren())(no_logits)
    # before the anchor is recorded (NaN) it is the current Hbar: loss 0, gradient 0
    unset = {"entropy_anchor": jnp.float32(jnp.nan)}
    (value, metrics), grad = jax.value_and_grad(
        lambda z: compose(siren(coef, top_p, q))(_batch(d, logits=z, controls=unset)),
        has_aux=True,
    )(jnp.asarray(d["logits"]))
    assert float(value) == 0.0 and not np.any(np.asarray(grad))
    np.testing.assert_allclose(metrics["siren/entropy"], h_p[peak].mean(), rtol=1e-5)
    assert siren().all_needs == {"logits"} and siren().controls == ("entropy_anchor",)


# --- Lp-Reg --------------------------------------------------------------------------------


def test_ref_lp_reg():
    d = _data(7)
    coef, rho, min_p = 0.5, 0.5, 0.05
    p = np_softmax(d["logits"])
    tau = min_p * p.max(-1)
    keep = p > tau[..., None]
    q0 = np.where(keep, p, 0.0) / np.where(keep, p, 0.0).sum(-1, keepdims=True)
    valid = d["mask"] > 0
    negative = valid & (d["advantages"] < 0)
    lowest = np_top_k(-d["logp"], negative, np_count(rho, negative.sum()))
    selected = lowest & (np.exp(d["logp"].astype(np.float64)) > tau)
    assert selected.sum() > 0 and (lowest & ~selected).sum() > 0  # both cases exercised
    n = valid.sum()

    def ref(z):  # the proxy is a constant target (built from the unperturbed policy)
        logp_all = np.log(np_softmax(z))
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.sum(np.where(keep, q0 * (np.log(q0) - logp_all), 0.0), -1)
        return coef * kl[selected].sum() / n

    def loss(z):
        return compose(lp_reg(coef, rho, min_p))(_batch(d, logits=z))

    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(d["logits"]))
    np.testing.assert_allclose(value, ref(d["logits"]), rtol=1e-4)
    np.testing.assert_allclose(metrics["lp_reg/selected_fraction"], selected.sum() / n, rtol=1e-6)
    np.testing.assert_allclose(grad, numeric_grad(ref, d["logits"]), rtol=2e-3, atol=1e-6)
    with pytest.raises(ValueError, match="rho must be <= 1"):
        lp_reg(rho=2.0)
    with pytest.raises(ValueError, match=r"lp_reg needs PolicyBatch\.logits"):
        compose(lp_reg())(make_policy_batch(jnp.zeros((2, 3)), -jnp.ones(2)))


# --- AEPO ----------------------------------------------------------------------------------


def test_ref_aepo():
    d = _data(8)
    m, n = d["mask"], d["mask"].sum()

    def loss(lp):
        return compose(aepo(coef=0.3))(_batch(d, logp=lp))[0]

    value, grad = jax.value_and_grad(loss)(jnp.asarray(d["logp"]))
    reward = d["rewards"][:, None]
    np.testing.assert_allclose(value, -0.3 * (reward * d["logp"] * m).sum() / n, rtol=1e-5)
    np.testing.assert_allclose(grad, -0.3 * np.broadcast_to(reward, (B, T)) * m / n, rtol=1e-5)
    np.testing.assert_allclose(aepo_temperature(jnp.array([0.2, 0.5, 0.9]), 0.5), [1.2, 0.8, 0.8])
    with pytest.raises(ValueError, match=r"aepo needs PolicyBatch\.rewards"):
        compose(aepo())(make_policy_batch(jnp.zeros((2, 3)), jnp.ones(2)))


# --- EPO -----------------------------------------------------------------------------------


def np_phase_weight(s, total, mid=0.8, slow=2.0, fast=3.0):
    half = total / 2
    s = min(max(s, 0.0), total)
    if s <= half:
        return 1 - (1 - mid) * (1 - np.exp(-slow * s / half)) / (1 - np.exp(-slow))
    return mid * np.exp(-fast * (s - half) / half)


def test_ref_epo_smoothing():
    d = _data(9)
    coef, k_lo, k_hi, hist, step, total = 0.1, 0.5, 1.5, 1.2, 70.0, 100
    controls = {"entropy_hist_mean": jnp.float32(hist), "step": jnp.float32(step)}
    h, m = d["entropy"].astype(np.float64), d["mask"]
    below, above = np.maximum(k_lo * hist - h, 0), np.maximum(h - k_hi * hist, 0)
    assert (below > 0).any() and (above > 0).any()
    w = np_phase_weight(step, total)

    def loss(ent, term):
        return compose(term)(_batch(d, entropy=ent, controls=controls))

    term = epo_smoothing(coef, k_lo, k_hi, total_steps=total)
    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(
        jnp.asarray(h, jnp.float32), term
    )
    n = m.sum()
    np.testing.assert_allclose(value, coef * w * ((below + above) * m).sum() / n, rtol=1e-5)
    outside = ((below > 0) | (above > 0)) * m
    np.testing.assert_allclose(
        metrics["epo_smoothing/outside_fraction"], outside.sum() / n, rtol=1e-6
    )
    want_grad = coef * w * ((above > 0).astype(float) - (below > 0)) * m / n
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)
    unweighted, _ = loss(jnp.asarray(h, jnp.float32), epo_smoothing(coef, k_lo, k_hi))
    np.testing.assert_allclose(unweighted, value / w, rtol=1e-5)
    empty = {**controls, "entropy_hist_count": jnp.float32(0.0)}
    value0, _ = compose(term)(_batch(d, entropy=jnp.asarray(h, jnp.float32), controls=empty))
    assert float(value0) == 0.0  # no history yet: no band to hold entropy in
    counted = {**controls, "entropy_hist_count": jnp.float32(3.0)}
    value3, _ = compose(term)(_batch(d, entropy=jnp.asarray(h, jnp.float32), controls=counted))
    np.testing.assert_allclose(value3, value, rtol=1e-6)
    for s in (0, 10, 50, 51, 99, 100, 150):
        np.testing.assert_allclose(epo_phase_weight(s, total), np_phase_weight(s, total), rtol=1e-5)
    np.testing.assert_allclose(epo_phase_weight(50, 100), 0.8, rtol=1e-6)  # continuous at half
    with pytest.raises(ValueError, match=r"controls\['entropy_hist_mean'\]"):
        compose(epo_smoothing())(_batch(d))
    with pytest.raises(ValueError, match="need 0 <= kappa_low <= kappa_high"):
        epo_smoothing(kappa_low=2.0, kappa_high=1.0)


# --- BAPO ----------------------------------------------------------------------------------


def np_bapo_bounds(r, a, m, rho0, low, high, dl, dh):
    def rho(cl, ch):
        pos = np.sum(np.where(m & (a > 0) & (r <= ch), r * a, 0.0))
        neg = np.sum(np.where(m & (a < 0) & (r >= cl), -r * a, 0.0))
        return 1.0 if pos + neg == 0 else pos / (pos + neg)

    cl, ch = low[0], high[0]
    while rho(cl, ch) < rho0 and (cl < low[1] or ch < high[1]):
        cl, ch = min(cl + dl, low[1]), min(ch + dh, high[1])
    return cl, ch, rho(cl, ch)


def test_ref_bapo():
    d = _data(10)
    rng = np.random.default_rng(0)
    # Negatives dominate and many ratios sit outside the initial bounds, so the search moves.
    d["advantages"] = np.where(rng.random((B, T)) < 0.7, -1.0, 0.6).astype(np.float32)
    d["old_logp"] = (d["logp"] + rng.normal(0, 0.5, (B, T))).astype(np.float32)
    r = np.exp(d["logp"].astype(np.float64) - d["old_logp"])
    a, valid = d["advantages"].astype(np.float64), d["mask"] > 0
    args = (0.5, (0.6, 0.9), (1.2, 3.0), 0.02, 0.05)
    want_lo, want_hi, want_rho = np_bapo_bounds(r, a, valid, *args)
    assert want_lo > 0.6 and want_hi > 1.2
    c_lo, c_hi, got_rho = bapo_clip_bounds(jnp.asarray(r, jnp.float32), a, d["mask"], *args)
    np.testing.assert_allclose([c_lo, c_hi, got_rho], [want_lo, want_hi, want_rho], rtol=1e-5)

    def loss(lp):
        return compose(bapo())(_batch(d, logp=lp))

    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(d["logp"]))
    unclipped, clipped = -a * r, -a * np.clip(r, want_lo, want_hi)
    per = np.maximum(unclipped, clipped)
    dual = (a < 0) & (per > -3 * a)
    per = np.where(dual, -3 * a, per)
    dper = np.where((clipped > unclipped) | dual, 0.0, -a * r)
    n = valid.sum()
    np.testing.assert_allclose(value, per[valid].sum() / n, rtol=1e-5)
    np.testing.assert_allclose(grad, dper * valid / n, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(metrics["bapo/c_high"], want_hi, rtol=1e-6)
    np.testing.assert_allclose(metrics["bapo/positive_contribution"], want_rho, rtol=1e-5)
    # Balanced batch: bounds stay at their starting values.
    lo, hi, _ = bapo_clip_bounds(jnp.ones((B, T)), jnp.ones((B, T)), jnp.ones((B, T)))
    np.testing.assert_allclose([lo, hi], [0.6, 1.2], rtol=1e-6)
    with pytest.raises(ValueError, match="need 0 < low_range"):
        bapo(low_range=(0.9, 0.6))


# --- SPINE ---------------------------------------------------------------------------------


def test_ref_spine():
    d = _data(11)
    coef, rho = 0.02, 0.3
    valid = d["mask"] > 0
    fork = np_top_k(d["entropy"], valid, np_count(rho, valid.sum()))
    h = d["entropy"].astype(np.float64)
    lo, hi = np.quantile(h[fork], 0.1), np.quantile(h[fork], 0.9)
    below, above = np.maximum(lo - h, 0), np.maximum(h - hi, 0)

    def loss(ent, term):
        return compose(term)(_batch(d, entropy=ent))

    ent = jnp.asarray(d["entropy"])
    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(ent, spine(coef, rho))
    np.testing.assert_allclose(value, coef * (below**2 + above**2)[fork].mean(), rtol=1e-4)
    np.testing.assert_allclose(
        [metrics["spine/band_low"], metrics["spine/band_high"]], [lo, hi], rtol=1e-5
    )
    want_grad = coef * (-2 * below + 2 * above) * fork / fork.sum()
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)
    fixed, _ = loss(ent, spine(coef, rho, band=(1.0, 2.0)))
    ref_fixed = (np.maximum(1.0 - h, 0) ** 2 + np.maximum(h - 2.0, 0) ** 2)[fork].mean()
    np.testing.assert_allclose(fixed, coef * ref_fixed, rtol=1e-5)
    with pytest.raises(ValueError, match="band must satisfy lo <= hi"):
        spine(band=(2.0, 1.0))
    with pytest.raises(ValueError, match="band_quantiles must satisfy"):
        spine(band_quantiles=(0.9, 0.1))


def test_all_regularizers_compose_under_one_jit():
    d = _data(12)
    controls = {"entropy_hist_mean": 1.0, "entropy_anchor": 1.5, "step": 10.0}
    loss_fn = compose(
        clip_cov(ratio=0.1, omega_low=0.0),
        kl_cov(),
        entropy_bonus(),
        siren(),
        lp_reg(),
        aepo(),
        epo_smoothing(total_steps=100),
        bapo(),
        spine(),
        ppo_clip().where(forking_tokens()).named("pg_fork"),
    )

    def loss(z):
        lp = jnp.take_along_axis(
            jax.nn.log_softmax(z), jnp.asarray(np.argmax(d["logits"], -1))[..., None], -1
        )[..., 0]
        batch = make_policy_batch(
            lp,
            jnp.asarray(d["advantages"]),
            jnp.asarray(d["mask"]),
            old_logp=jnp.asarray(d["old_logp"]),
            logits=z,
            rewards=jnp.asarray(d["rewards"]),
            key=jax.random.key(0),
            controls=controls,
        )
        return loss_fn(batch)

    (value, metrics), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        jnp.asarray(d["logits"])
    )
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert all(np.isfinite(float(v)) for v in metrics.values())
