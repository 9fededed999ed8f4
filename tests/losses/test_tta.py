"""Test-time adaptation losses vs numpy references written from the papers' formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.losses.deyo import deyo, patch_shuffle
from entropix.losses.eata import eata, fisher_diagonal, fisher_penalty
from entropix.losses.registry import REGISTRY
from entropix.losses.tsallis_tta import (
    adte,
    adte_q,
    classwise_tsallis_entropy,
    confident_view_mask,
    estimate_label_bias,
    tsallis_tta,
)
from entropix.losses.tta import sar, sar_reset_check, tent

C = 6
LOGITS = (np.random.default_rng(0).normal(size=(16, C)) * 2.5).astype(np.float32)


# ---- numpy references ---------------------------------------------------------------------


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_entropy(z):
    p = np_softmax(z)
    return -np.sum(p * np.log(p), -1)


def np_selected_mean(values, selected):
    return values[selected].mean() if selected.any() else 0.0


def directional_fd(f, x, seed=1, eps=1e-3, reference=None):
    """(g(x + eps v) - g(x - eps v)) / 2 eps and grad(f)(x) . v for a random direction v.

    ``g`` is ``reference`` when given (a float64 numpy function with the same gradient as f,
    e.g. with f's stop-gradient weights frozen), else f itself.
    """
    g = f if reference is None else reference
    v = np.random.default_rng(seed).normal(size=np.shape(x)).astype(np.float32)
    fd = (float(g(x + eps * v)) - float(g(x - eps * v))) / (2 * eps)
    return fd, float(jnp.vdot(jax.grad(f)(jnp.asarray(x)), v))


def frozen_weight_fd(f, x, weights, selected):
    """Finite difference of mean_{selected} weights * H(x) with the weights held fixed."""
    return directional_fd(
        f, x, reference=lambda z: np_selected_mean(weights * np_entropy(z), selected)
    )


# ---- Tent ---------------------------------------------------------------------------------


def test_ref_tent():
    loss, metrics = tent()(LOGITS)
    np.testing.assert_allclose(loss, np_entropy(LOGITS).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["entropy"], loss)
    t_loss, _ = tent(temperature=2.0)(LOGITS)
    np.testing.assert_allclose(t_loss, np_entropy(LOGITS / 2.0).mean(), rtol=1e-5)


def test_tent_gradient_matches_finite_differences():
    fd, analytic = directional_fd(lambda z: tent()(z)[0], LOGITS)
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=1e-4)


def test_tent_reduces_entropy_of_normalised_linear_classifier():
    """A few SGD steps on the affine parameters of a batch-norm layer lower the mean entropy."""
    rng = np.random.default_rng(3)
    d, classes = 8, 5
    head = jnp.asarray(rng.normal(size=(d, classes)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(64, d)) * 2.0 + 1.5, jnp.float32)  # shifted test batch
    loss_fn = tent()

    def entropy_of(affine):
        mean, var = jnp.mean(x, 0), jnp.var(x, 0)
        features = (x - mean) / jnp.sqrt(var + 1e-5) * affine["scale"] + affine["shift"]
        return loss_fn(features @ head)[0]

    affine = {"scale": jnp.full((d,), 0.3), "shift": jnp.zeros((d,))}
    start = float(entropy_of(affine))
    step = jax.jit(lambda a: jax.tree.map(lambda p, g: p - 0.5 * g, a, jax.grad(entropy_of)(a)))
    for _ in range(5):
        affine = step(affine)
    end = float(entropy_of(affine))
    assert end < start - 0.05, (start, end)


def test_tta_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="logits must have rank 2"):
        tent()(LOGITS[0])
    with pytest.raises(TypeError, match="logits must be a floating"):
        sar()(LOGITS.astype(np.int32))
    with pytest.raises(ValueError, match="at least 2 classes"):
        tent()(LOGITS[:, :1])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        tent(temperature=0.0)


# ---- SAR ----------------------------------------------------------------------------------


def test_ref_sar():
    h = np_entropy(LOGITS)
    e0 = 0.4 * math.log(C)
    selected = h < e0
    assert 0 < selected.sum() < len(h)  # the seeded batch exercises the filter
    loss, metrics = sar()(LOGITS)
    np.testing.assert_allclose(loss, np_selected_mean(h, selected), rtol=1e-5)
    np.testing.assert_allclose(metrics["selected_fraction"], selected.mean())
    fd, analytic = directional_fd(lambda z: sar()(z)[0], LOGITS)
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=1e-4)


def test_sar_selects_exactly_the_low_entropy_rows():
    confident = np.zeros((3, 4), np.float32)
    confident[0, 0] = 9.0  # H ~ 0.004 < 0.4 ln 4
    confident[2, 1] = 9.0
    loss, metrics = sar()(confident)  # row 1 is uniform: H = ln 4, filtered out
    h = np_entropy(confident)
    np.testing.assert_allclose(loss, (h[0] + h[2]) / 2, rtol=1e-4)
    np.testing.assert_allclose(metrics["selected_fraction"], 2 / 3)
    empty_loss, _ = sar()(np.zeros((2, 4), np.float32))
    assert float(empty_loss) == 0.0


def test_sar_reset_rule():
    ema, reset = sar_reset_check(jnp.nan, 0.5)
    assert float(ema) == pytest.approx(0.5) and not bool(reset)
    ema, reset = sar_reset_check(ema, 0.1)
    assert float(ema) == pytest.approx(0.9 * 0.5 + 0.1 * 0.1) and not bool(reset)
    ema, reset = sar_reset_check(0.21, 0.0)
    assert float(ema) == pytest.approx(0.189) and bool(reset)


# ---- EATA ---------------------------------------------------------------------------------


def np_eata(z, m, e_margin, d_margin, momentum=0.9):
    p = np_softmax(z)
    h = np_entropy(z)
    e0 = e_margin * math.log(z.shape[-1])
    reliable = h < e0
    if np.any(m != 0):
        cos = p @ m / (np.linalg.norm(p, axis=-1) * np.linalg.norm(m))
        selected = reliable & (cos < d_margin)
    else:
        selected = reliable
    weights = np.exp(e0 - h)
    loss = np_selected_mean(weights * h, selected)
    if not selected.any():
        new_m = m
    elif np.any(m != 0):
        new_m = momentum * m + (1 - momentum) * p[selected].mean(0)
    else:
        new_m = p[selected].mean(0)
    return loss, selected, new_m


def test_ref_eata():
    fn = eata(margin_factor=0.6, redundancy_margin=0.6)
    m0 = np.zeros(C, np.float32)
    loss, (metrics, m1) = fn(LOGITS, m0)
    ref_loss, ref_sel, ref_m1 = np_eata(LOGITS, m0, 0.6, 0.6)
    assert 0 < ref_sel.sum() < len(ref_sel)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["selected_fraction"], ref_sel.mean())
    np.testing.assert_allclose(m1, ref_m1, rtol=1e-5)
    # Second step: the redundancy filter is active against the moving average.
    logits2 = (np.random.default_rng(5).normal(size=(16, C)) * 2.5).astype(np.float32)
    loss2, (metrics2, m2) = fn(logits2, np.asarray(m1))
    ref_loss2, ref_sel2, ref_m2 = np_eata(logits2, np.asarray(m1, np.float64), 0.6, 0.6)
    assert ref_sel2.sum() < (np_entropy(logits2) < 0.6 * math.log(C)).sum()
    np.testing.assert_allclose(loss2, ref_loss2, rtol=1e-5)
    np.testing.assert_allclose(metrics2["selected_fraction"], ref_sel2.mean())
    np.testing.assert_allclose(m2, ref_m2, rtol=1e-5)
    # Gradient: the weights and the filter are constants (stop-gradient), so the finite
    # difference is taken with them frozen at their values.
    w = np.exp(0.6 * math.log(C) - np_entropy(logits2))
    fd, analytic = frozen_weight_fd(lambda z: fn(z, np.asarray(m1))[0], logits2, w, ref_sel2)
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=1e-4)


def test_eata_redundant_sample_is_dropped_and_empty_selection_keeps_average():
    confident = np.array([[8.0, 0, 0, 0], [0, 8.0, 0, 0]], np.float32)
    m = np.array([1.0, 0.0, 0.0, 0.0], np.float32)  # row 0 repeats the average prediction
    loss, (metrics, new_m) = eata()(confident, m)
    h1 = np_entropy(confident)[1]
    np.testing.assert_allclose(loss, np.exp(0.4 * math.log(4) - h1) * h1, rtol=1e-4)
    np.testing.assert_allclose(metrics["selected_fraction"], 0.5)
    loss, (_, kept) = eata()(np.zeros((2, 4), np.float32), m)  # nothing reliable
    assert float(loss) == 0.0
    np.testing.assert_array_equal(kept, m)


def test_eata_fisher_penalty_and_diagonal():
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(0.5)}
    anchor = {"w": jnp.array([0.0, 1.0]), "b": jnp.array(0.0)}
    grads = {"w": jnp.array([[1.0, 2.0], [3.0, 0.0]]), "b": jnp.array([2.0, 0.0])}
    fisher = fisher_diagonal(grads)
    np.testing.assert_allclose(fisher["w"], [5.0, 2.0])
    np.testing.assert_allclose(fisher["b"], 2.0)
    expected = 2000.0 * (5.0 * 1.0 + 2.0 * 1.0 + 2.0 * 0.25)
    np.testing.assert_allclose(fisher_penalty(params, anchor, fisher), expected, rtol=1e-6)
    g = jax.grad(fisher_penalty)(params, anchor, fisher, 1.0)
    np.testing.assert_allclose(g["w"], [2 * 5.0 * 1.0, 2 * 2.0 * 1.0])
    with pytest.raises(ValueError, match="anchor_params must have the same pytree"):
        fisher_penalty(params, {"w": anchor["w"]}, fisher)


def test_eata_bad_state_shape():
    with pytest.raises(ValueError, match="prob_ema must have shape"):
        eata()(LOGITS, np.zeros(C + 1, np.float32))


# ---- DeYO ---------------------------------------------------------------------------------


def np_deyo(z, z_shuffled, margin=0.5, weight_margin=0.4, tau=0.2):
    p, p2 = np_softmax(z), np_softmax(z_shuffled)
    h = np_entropy(z)
    label = p.argmax(-1)
    rows = np.arange(len(z))
    plpd = p[rows, label] - p2[rows, label]
    log_c = math.log(z.shape[-1])
    selected = (h < margin * log_c) & (plpd > tau)
    weights = np.exp(-(h - weight_margin * log_c)) + np.exp(plpd)
    return np_selected_mean(weights * h, selected), selected, plpd


def test_ref_deyo():
    noise = np.random.default_rng(4).normal(size=LOGITS.shape)
    shuffled = (0.5 * LOGITS + 1.5 * noise).astype(np.float32)
    loss, metrics = deyo()(LOGITS, shuffled)
    ref_loss, selected, plpd = np_deyo(LOGITS, shuffled)
    confident = np_entropy(LOGITS) < 0.5 * math.log(C)
    assert 0 < selected.sum() < confident.sum()  # both filters bite on this seed
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["selected_fraction"], selected.mean())
    np.testing.assert_allclose(metrics["plpd"], plpd.mean(), rtol=1e-5, atol=1e-7)
    weights = np.exp(0.4 * math.log(C) - np_entropy(LOGITS)) + np.exp(plpd)
    fd, analytic = frozen_weight_fd(lambda z: deyo()(z, shuffled)[0], LOGITS, weights, selected)
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=1e-4)
    shuffled_grad = jax.grad(lambda s: deyo()(LOGITS, s)[0])(shuffled)
    np.testing.assert_array_equal(shuffled_grad, 0.0)  # the shuffled view is a constant


def test_deyo_unweighted_is_plain_filtered_entropy():
    shuffled = np.zeros_like(LOGITS)
    loss, _ = deyo(reweight_entropy=False, reweight_plpd=False)(LOGITS, shuffled)
    _, selected, _ = np_deyo(LOGITS, shuffled)
    np.testing.assert_allclose(loss, np_entropy(LOGITS)[selected].mean(), rtol=1e-5)


def test_deyo_shape_mismatch():
    with pytest.raises(ValueError, match="shuffled_logits must have shape"):
        deyo()(LOGITS, LOGITS[:3])


def test_patch_shuffle_permutes_tiles():
    images = jnp.asarray(np.random.default_rng(6).normal(size=(3, 8, 12, 2)), jnp.float32)
    out = patch_shuffle(jax.random.key(0), images, patches=4)
    assert out.shape == images.shape

    def tiles(x):
        return (
            np.asarray(x).reshape(3, 4, 2, 4, 3, 2).transpose(0, 1, 3, 2, 4, 5).reshape(3, 16, -1)
        )

    t_in, t_out = tiles(images), tiles(out)
    for b in range(3):
        order = [int(np.argmin(np.abs(t_in[b] - tile).sum(-1))) for tile in t_out[b]]
        assert sorted(order) == list(range(16))
        np.testing.assert_array_equal(t_out[b], t_in[b][order])
    np.testing.assert_array_equal(out, patch_shuffle(jax.random.key(0), images, patches=4))
    assert not np.array_equal(out, patch_shuffle(jax.random.key(1), images, patches=4))


def test_patch_shuffle_resizes_non_divisible_images():
    images = jnp.ones((2, 10, 9, 3), jnp.float32)
    out = patch_shuffle(jax.random.key(0), images, patches=4)
    assert out.shape == images.shape
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="images must have rank 4"):
        patch_shuffle(jax.random.key(0), images[0])
    with pytest.raises(ValueError, match="cannot be cut"):
        patch_shuffle(jax.random.key(0), images, patches=16)


# ---- Tsallis / ADTE -----------------------------------------------------------------------


def np_tsallis(z, q):
    return (1.0 - np.sum(np_softmax(z) ** q, -1)) / (q - 1.0)


def np_classwise_tsallis(z, q):
    p = np_softmax(z)
    shannon_terms = -p * np.log(p)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q == 1.0, shannon_terms, (p**q - p) / (1.0 - q))
    return terms.sum(-1)


def test_ref_tsallis_tta():
    loss, _ = tsallis_tta()(LOGITS)
    np.testing.assert_allclose(loss, np_tsallis(LOGITS, 0.5).mean(), rtol=1e-5)
    loss2, _ = tsallis_tta(q=2.0)(LOGITS)
    np.testing.assert_allclose(loss2, np_tsallis(LOGITS, 2.0).mean(), rtol=1e-5)
    fd, analytic = directional_fd(lambda z: tsallis_tta()(z)[0], LOGITS)
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=1e-4)


def test_classwise_tsallis_reduces_to_tsallis_and_shannon():
    for q in (0.3, 0.9999, 2.0):
        got = classwise_tsallis_entropy(LOGITS, jnp.full((C,), q))
        np.testing.assert_allclose(got, np_tsallis(LOGITS, q), rtol=1e-4, atol=1e-6)
    got = classwise_tsallis_entropy(LOGITS, jnp.ones((C,)))
    np.testing.assert_allclose(got, np_entropy(LOGITS), rtol=1e-5)
    q = np.linspace(0.2, 1.0, C)
    got = classwise_tsallis_entropy(LOGITS, jnp.asarray(q, jnp.float32))
    np.testing.assert_allclose(got, np_classwise_tsallis(LOGITS, q), rtol=1e-4)


def test_ref_adte():
    bias = np.array([0.4, 0.2, 0.1, 0.1, 0.15, 0.05], np.float32)
    q = np.clip(bias / bias.max(), 0.01, 1.0)
    np.testing.assert_allclose(adte_q(bias), q, rtol=1e-6)
    loss, metrics = adte()(LOGITS, bias)
    np.testing.assert_allclose(loss, np_classwise_tsallis(LOGITS, q).mean(), rtol=1e-4)
    np.testing.assert_allclose(metrics["q_mean"], q.mean(), rtol=1e-6)
    fd, analytic = directional_fd(lambda z: adte()(z, bias)[0], LOGITS)
    np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=1e-4)
    with pytest.raises(ValueError, match="label_bias must have shape"):
        adte()(LOGITS, bias[:3])


def test_estimate_label_bias_is_the_confusion_stationary_vector():
    k, m = 4, 3
    bank = np_softmax(np.random.default_rng(7).normal(size=(k, m, k)) * 2).astype(np.float32)
    valid = np.ones((k, m), bool)
    valid[2] = False  # class 2 has no entries: identity column
    valid[0, 1] = False
    confusion = np.zeros((k, k))
    for j in range(k):
        confusion[:, j] = bank[j][valid[j]].mean(0) if valid[j].any() else np.eye(k)[j]
    b = np.full(k, 1.0 / k)
    for _ in range(100):
        b = confusion @ b
    got = estimate_label_bias(bank, valid)
    np.testing.assert_allclose(got, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.sum(got), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="bank_probs must be"):
        estimate_label_bias(bank[:, :, :3], valid)


def test_confident_view_mask_selects_lowest_entropy():
    h = jnp.array([0.5, 0.1, 0.9, 0.1, 0.3, 0.7, 0.2, 0.8, 0.6, 0.4, 1.0, 0.05])
    np.testing.assert_array_equal(np.flatnonzero(confident_view_mask(h, 0.25)), [1, 3, 11])
    np.testing.assert_array_equal(np.flatnonzero(confident_view_mask(h, 0.01)), [11])


def test_tta_methods_are_registered():
    for key in ("tent", "sar", "eata", "deyo", "tsallis_tta", "adte"):
        assert REGISTRY[key].kind == "tta"
        assert "Formula:" in REGISTRY[key].doc and "Paper:" in REGISTRY[key].doc


def test_tta_losses_are_jittable():
    m = np.zeros(C, np.float32)
    bias = np.full(C, 1.0 / C, np.float32)
    cases = [
        (tent(), (LOGITS,)),
        (sar(), (LOGITS,)),
        (eata(), (LOGITS, m)),
        (deyo(), (LOGITS, LOGITS[::-1])),
        (tsallis_tta(), (LOGITS,)),
        (adte(), (LOGITS, bias)),
    ]
    for fn, args in cases:
        np.testing.assert_allclose(jax.jit(fn)(*args)[0], fn(*args)[0], rtol=1e-6)
    images = jnp.ones((2, 8, 8, 1))
    shuffled = jax.jit(patch_shuffle, static_argnames="patches")(jax.random.key(0), images, 4)
    np.testing.assert_array_equal(shuffled, images)
