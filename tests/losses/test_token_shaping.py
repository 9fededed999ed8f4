"""Token-level shaping interventions (GTPO conflict tokens, STEER, the entropy discriminator,
HAPO, CANON, UloRL, PEAR and R3 rewards, the entropy-balanced clip) vs numpy references written
from the papers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.losses import compose, make_policy_batch, ppo_clip
from entropix.losses.canon import canon_advantages, metric_halves
from entropix.losses.entropy_balanced import entropy_balanced_clip
from entropix.losses.entropy_discriminator import (
    discriminator_contribution,
    discriminator_keep_mask,
    entropy_discriminator,
    entropy_discriminator_clip,
    expected_discriminator,
)
from entropix.losses.gtpo import conflict_tokens, gtpo_advantages, gtpo_token_weights
from entropix.losses.hapo import (
    hapo_clip,
    hapo_clip_bounds,
    hapo_entropy_signal,
    token_level_group_advantages,
)
from entropix.losses.registry import REGISTRY
from entropix.losses.rewards import pear_rewards, r3_rewards, structural_entropy_score
from entropix.losses.steer import entropy_change_score, steer, steer_token_weights
from entropix.losses.ulorl import mastered_positive_tokens, ulorl, ulorl_keep_mask

B, T, V = 6, 7, 5


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def eager_and_jitted(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` eagerly and under ``jax.jit``: each is checked against numpy."""
    return fn(*args, **kwargs), jax.jit(lambda *a: fn(*a, **kwargs))(*args)


def make_tokens():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(B, T, V)) * 2).astype(np.float32)
    p = np_softmax(logits)
    tokens = np.stack([[rng.choice(V, p=p[b, t]) for t in range(T)] for b in range(B)])
    logp = np.log(np.take_along_axis(p, tokens[..., None], -1)[..., 0]).astype(np.float32)
    entropy = (-np.sum(p * np.log(p), -1)).astype(np.float32)
    mask = np.ones((B, T), np.float32)
    mask[1, 5:] = 0
    mask[4, 3:] = 0
    return logits, tokens, logp, entropy, mask


# ---- GTPO ---------------------------------------------------------------------------------


def test_conflict_tokens_exact_set():
    tokens = np.array(
        [
            [1, 2, 3, 4],
            [1, 2, 9, 4],  # opposite sign to row 0 -> positions 0, 1, 3 conflict
            [1, 7, 3, 4],  # same sign as row 0: no conflict with it; vs row 1 -> 0, 3
            [1, 2, 3, 4],  # other group: never conflicts with rows 0-2
        ],
        np.int32,
    )
    adv = np.array([1.0, -1.0, 0.5, -2.0], np.float32)
    groups = np.array([0, 0, 0, 1], np.int32)
    mask = np.ones((4, 4), np.float32)
    mask[1, 3] = 0  # padding never conflicts
    got = np.asarray(conflict_tokens(tokens, adv, mask, groups))
    want = np.array(
        [
            [1, 1, 0, 0],
            [1, 1, 0, 0],
            [1, 0, 0, 0],
            [0, 0, 0, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(got, want)
    weights = gtpo_token_weights(got, adv, conflict_weight=2.0)
    np.testing.assert_array_equal(weights, [[2, 2, 1, 1], [0, 0, 1, 1], [2, 1, 1, 1], [1, 1, 1, 1]])


def test_conflict_tokens_zero_advantage_never_conflicts_and_bad_input():
    tokens = np.zeros((2, 3), np.int32)
    got = conflict_tokens(tokens, np.array([0.0, -1.0]), np.ones((2, 3)), np.zeros(2, np.int32))
    assert not bool(jnp.any(got))
    with pytest.raises(TypeError, match="tokens must be integer"):
        conflict_tokens(tokens.astype(np.float32), np.zeros(2), np.ones((2, 3)), np.zeros(2))


def test_ref_gtpo():
    tokens = np.array([[1, 2, 3, 4], [1, 2, 9, 4], [1, 7, 3, 4], [5, 5, 5, 5]], np.int32)
    adv = np.array([1.0, -1.0, 0.5, -2.0], np.float32)
    groups = np.array([0, 0, 0, 0], np.int32)
    mask = np.ones((4, 4), np.float32)
    entropy = np.array([[0.2] * 4, [0.4] * 4, [0.3, 0.3, 0.3, 3.0], [0.1] * 4], np.float32)
    got, jitted = eager_and_jitted(gtpo_advantages, adv, tokens, mask, groups, entropy)
    h = entropy.mean(-1)  # row 2: 0.975 > 0.7 -> dropped
    conflict = np.array([[1, 1, 0, 1], [1, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 0]], bool)
    w = np.where(conflict, np.where(adv[:, None] > 0, 2.0, 0.0), 1.0)
    want = w * np.where(h <= 0.7, adv - 0.1 * h, 0.0)[:, None]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(jitted, want, rtol=1e-6)
    # Per-token advantages are reduced to one value per response first.
    per_token = np.repeat(adv[:, None], 4, axis=1)
    np.testing.assert_allclose(gtpo_advantages(per_token, tokens, mask, groups, entropy), got)
    with pytest.raises(ValueError, match="conflict_weight must be >= 0"):
        gtpo_advantages(adv, tokens, mask, groups, entropy, conflict_weight=-1.0)


# ---- STEER --------------------------------------------------------------------------------


def test_steer_score_and_weights_match_numpy():
    _, _, logp, entropy, mask = make_tokens()
    rng = np.random.default_rng(1)
    old_logp = (logp + rng.normal(size=logp.shape) * 0.1).astype(np.float32)
    adv = rng.normal(size=(B, T)).astype(np.float32)
    p, old_p = np.exp(logp.astype(np.float64)), np.exp(old_logp.astype(np.float64))
    omega = adv / old_p * p * (1 - p) * (np.log(p) + entropy)
    got = entropy_change_score(logp, old_logp, adv, entropy)
    np.testing.assert_allclose(got, omega, rtol=1e-4, atol=1e-6)
    a = np.abs(omega)[mask > 0]
    w = 1.2 - (np.abs(omega) - a.min()) * 0.4 / (a.max() - a.min())
    np.testing.assert_allclose(steer_token_weights(got, mask), np.where(mask > 0, w, 0), rtol=1e-4)
    flat = steer_token_weights(jnp.ones((2, 3)), jnp.ones((2, 3)))
    np.testing.assert_allclose(flat, 1.0)
    with pytest.raises(ValueError, match="w_min <= w_max"):
        steer_token_weights(got, mask, 1.3, 1.2)


# ---- entropy discriminator ----------------------------------------------------------------


def test_entropy_discriminator_matches_first_order_entropy_change():
    """dH of bumping logit k by eps is -eps * S_k (the paper's theorem), by finite difference."""
    logits, tokens, logp, entropy, _ = make_tokens()
    s = np.asarray(entropy_discriminator(logp, entropy))
    eps = 1e-3
    z = logits[2, 3].astype(np.float64)
    k = tokens[2, 3]

    def h(v):
        p = np_softmax(v)
        return -np.sum(p * np.log(p))

    bumped = z.copy()
    bumped[k] += eps
    np.testing.assert_allclose((h(bumped) - h(z)) / eps, -s[2, 3], rtol=1e-2, atol=1e-5)
    p = np_softmax(logits)
    h_all = -np.sum(p * np.log(p), -1, keepdims=True)
    want = np.sum(p * p * (h_all + np.log(p)), -1)
    np.testing.assert_allclose(expected_discriminator(logits), want, rtol=1e-4, atol=1e-6)


def test_discriminator_keep_mask_drops_exactly_the_outliers():
    _, _, logp, entropy, mask = make_tokens()
    adv = np.random.default_rng(2).normal(size=(B, T)).astype(np.float32)
    c = np.asarray(discriminator_contribution(logp, entropy, adv, mask))
    s = np.exp(logp) * (entropy + logp)
    valid = mask > 0
    np.testing.assert_allclose(c, adv * (s - s[valid].mean()), rtol=1e-4, atol=1e-6)
    z = (c - c[valid].mean()) / c[valid].std()
    for threshold in (0.5, 1.0, 2.0):
        keep = np.asarray(discriminator_keep_mask(c, mask, threshold))
        np.testing.assert_array_equal(keep, valid & (z <= threshold))
    assert not np.asarray(discriminator_keep_mask(c, mask, 0.5)).all()


# ---- HAPO ---------------------------------------------------------------------------------


def test_hapo_entropy_signal_matches_numpy():
    _, _, _, entropy, mask = make_tokens()
    valid = mask > 0
    u = np.log(np.maximum(entropy.astype(np.float64), 1e-8))
    ordered = np.sort(u[valid])
    centre = ordered[int(np.round(0.5 * (len(ordered) - 1)))]
    d = np.where(valid, u - centre, 0.0)
    h = d / np.sqrt(np.sum(d**2) / valid.sum())
    want = np.where(h > 0, h / h[valid & (h > 0)].max(), h / -h[valid & (h < 0)].min())
    got = np.asarray(hapo_entropy_signal(entropy, mask))
    np.testing.assert_allclose(got[valid], want[valid], rtol=1e-4, atol=1e-6)
    assert got[valid].max() == pytest.approx(1.0) and got[valid].min() == pytest.approx(-1.0)
    low, high = hapo_clip_bounds(got, 0.2, 0.28, 1.0)
    np.testing.assert_allclose(low, np.where(got <= 0, 0.2 * (1 - got), 0.2), rtol=1e-6)
    np.testing.assert_allclose(high, np.where(got > 0, 0.28 * (1 + got), 0.28), rtol=1e-6)
    assert np.all(np.asarray(low) >= 0.2 - 1e-7) and np.all(np.asarray(high) >= 0.28 - 1e-7)


def test_ref_hapo_token_group_average():
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.0], np.float32)
    groups = np.array([0, 0, 0, 1, 1, 1], np.int32)
    mask = np.zeros((6, 5), np.float32)
    for i, n in enumerate([5, 2, 3, 1, 4, 2]):
        mask[i, :n] = 1
    lengths = mask.sum(-1)
    want = np.zeros(6)
    for g in (0, 1):
        sel = groups == g
        mu = np.sum(lengths[sel] * rewards[sel]) / lengths[sel].sum()
        sd = np.sqrt(np.sum(lengths[sel] * (rewards[sel] - mu) ** 2) / lengths[sel].sum())
        want[sel] = (rewards[sel] - mu) / (sd + 1e-6)
    got, jitted = eager_and_jitted(token_level_group_advantages, rewards, groups, mask)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(jitted, want, rtol=1e-5)
    # Token-weighted: every valid token's advantage sums to zero within a group.
    for g in (0, 1):
        sel = groups == g
        assert abs(np.sum(np.asarray(got)[sel] * lengths[sel])) < 1e-4


# ---- CANON --------------------------------------------------------------------------------


def np_canon(rewards, groups, metric, mu, alpha=1.0):
    out = np.zeros(len(rewards))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) == 1:
            continue  # singleton groups get advantage 0
        order = idx[np.argsort(metric[idx], kind="stable")]
        lower, upper = order[: len(idx) // 2], order[len(idx) // 2 :]
        m_lo = rewards[lower].mean() if len(lower) else 0.0
        m_hi = rewards[upper].mean() if len(upper) else 0.0
        for i in upper:
            out[i] = mu * (alpha * rewards[i] - m_lo) + (1 - mu) * (rewards[i] - m_hi)
        for i in lower:
            out[i] = mu * (rewards[i] - alpha * m_hi) + (1 - mu) * (rewards[i] - m_lo)
    return out


def test_ref_canon():
    rng = np.random.default_rng(3)
    rewards = rng.integers(0, 2, size=10).astype(np.float32)
    rewards[9] = 1.0  # the singleton group still gets advantage 0
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2], np.int32)
    metric = rng.normal(size=10).astype(np.float32)
    metric[1] = metric[0]  # a tie, broken by index
    for mu, alpha in ((1.0, 1.0), (0.0, 1.0), (0.3, 1.2)):
        want = np_canon(rewards, groups, metric, mu, alpha)
        for got in eager_and_jitted(canon_advantages, rewards, groups, metric, mu, alpha):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # mu = 1/2 is Dr. GRPO's r - mean(r) for even groups.
    half = np.asarray(canon_advantages(rewards, groups, metric, 0.5))
    for g in (0,):
        sel = groups == g
        np.testing.assert_allclose(half[sel], rewards[sel] - rewards[sel].mean(), rtol=1e-5)
    upper = np.asarray(metric_halves(metric, groups))
    np.testing.assert_array_equal(upper.sum(), 2 + 3 + 1)


# ---- UloRL --------------------------------------------------------------------------------


def test_ulorl_masks_mastered_positive_tokens_only_when_entropy_is_low():
    logp = np.log(np.array([[0.995, 0.5, 0.999], [0.999, 0.991, 0.2]], np.float32))
    adv = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
    mpt = np.asarray(mastered_positive_tokens(logp, adv, mask, 0.99))
    np.testing.assert_array_equal(mpt, [[True, False, True], [False, False, False]])
    low = np.full((2, 3), 0.1, np.float32)
    keep = np.asarray(ulorl_keep_mask(logp, adv, low, mask, 0.99, 0.2))
    np.testing.assert_array_equal(keep, (mask > 0) & ~mpt)
    high = np.full((2, 3), 0.5, np.float32)
    np.testing.assert_array_equal(ulorl_keep_mask(logp, adv, high, mask), mask > 0)


# ---- PEAR and R3 rewards ------------------------------------------------------------------


def test_ref_pear():
    rewards = np.array([1.0, 0.0, 1.0], np.float32)
    entropy = np.array(
        [[1.0, 0.6, 0.2, 0.1], [0.4, 0.4, 2.0, 2.0], [0.1, 0.1, 0.1, 0.0]], np.float32
    )
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]], np.float32)
    answer = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]], np.float32)
    think = np.array([0.8, 0.4, 0.1])
    ans = np.array([0.15, 2.0, 0.1])
    want = rewards - np.maximum(think - 0.5 * ans, 0.0)
    for got in eager_and_jitted(pear_rewards, rewards, entropy, mask, answer, alpha=1.0, beta=0.5):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="answer_mask has shape"):
        pear_rewards(rewards, entropy, mask, answer[:, :3])


def test_ref_r3():
    rng = np.random.default_rng(4)
    entropy = rng.uniform(0, 2, size=(6, 10)).astype(np.float32)
    mask = np.ones((6, 10), np.float32)
    mask[2, 6:] = 0
    rewards = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0], np.float32)
    groups = np.array([0, 0, 0, 0, 1, 1], np.int32)
    score = np.asarray(structural_entropy_score(entropy, mask, 0.2))
    for i in range(6):
        vals = np.sort(entropy[i][mask[i] > 0])[::-1]
        k = max(math.ceil(0.2 * len(vals)), 1)
        np.testing.assert_allclose(score[i], vals[:k].mean() - vals.mean(), rtol=1e-5)
    got, jitted = eager_and_jitted(r3_rewards, rewards, entropy, mask, groups, max_bonus=0.1)
    want = rewards.astype(np.float64).copy()
    for members in ([0, 1, 2], [4, 5]):
        ranks = np.argsort(np.argsort(score[members], kind="stable"), kind="stable")
        want[members] += 0.1 * ranks / max(len(members) - 1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(jitted, want, rtol=1e-6)
    assert np.max(np.asarray(got)[rewards == 0]) < 1.0  # never overturns correctness


# ---- loss terms and selectors on a PolicyBatch ----------------------------------------------


def make_batch(seed=5, advantage_scale=1.0):
    logits, tokens, logp, entropy, mask = make_tokens()
    rng = np.random.default_rng(seed)
    old_logp = (logp + rng.normal(size=logp.shape) * 0.3).astype(np.float32)
    adv = (rng.normal(size=B) * advantage_scale).astype(np.float32)
    batch = make_policy_batch(
        jnp.asarray(logp),
        jnp.asarray(adv),
        jnp.asarray(mask),
        old_logp=jnp.asarray(old_logp),
        entropy=jnp.asarray(entropy),
        logits=jnp.asarray(logits),
        group_ids=jnp.asarray(np.repeat([0, 1], 3), jnp.int32),
    )
    return batch


def np_surrogate(ratio, adv, lo, hi, dual=None):
    loss = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - lo, 1 + hi))
    if dual is not None:
        loss = np.where(adv < 0, np.minimum(loss, -dual * adv), loss)
    return loss


def token_mean(values, mask):
    return np.sum(values * mask) / np.sum(mask)


def with_logp(batch, logp):
    return batch.replace(logp=jnp.asarray(logp, jnp.float32))


def test_ref_steer():
    batch = make_batch()
    logp, old, adv, ent, mask = (
        np.asarray(x, np.float64)
        for x in (batch.logp, batch.old_logp, batch.advantages, batch.entropy, batch.mask)
    )
    ratio = np.exp(logp - old)
    p = np.exp(logp)
    omega = np.abs(adv / np.exp(old) * p * (1 - p) * (np.log(p) + ent))
    a = omega[mask > 0]
    w = 1.2 - (omega - a.min()) * 0.4 / (a.max() - a.min())
    want = token_mean(w * np_surrogate(ratio, adv, 0.2, 0.28, 3.0), mask)
    loss_fn = compose(steer())
    loss, metrics = loss_fn(batch)
    np.testing.assert_allclose(loss, want, rtol=1e-4)
    np.testing.assert_allclose(metrics["steer/weight_mean"], token_mean(w, mask), rtol=1e-5)
    # Gradient w.r.t. logp with the (stop-gradient) weights frozen.
    v = np.random.default_rng(9).normal(size=logp.shape)
    eps = 1e-3

    def ref(lp):
        return token_mean(w * np_surrogate(np.exp(lp - old), adv, 0.2, 0.28, 3.0), mask)

    fd = (ref(logp + eps * v) - ref(logp - eps * v)) / (2 * eps)
    grad = jax.grad(lambda lp: loss_fn(with_logp(batch, lp))[0])(batch.logp)
    np.testing.assert_allclose(np.vdot(grad, v), fd, rtol=2e-2, atol=1e-5)
    with pytest.raises(ValueError, match="needs PolicyBatch.entropy"):
        compose(steer())(batch.replace(entropy=None))


def test_ref_hapo_clip():
    batch = make_batch(advantage_scale=2.0)
    logp, old, adv, mask = (
        np.asarray(x, np.float64)
        for x in (batch.logp, batch.old_logp, batch.advantages, batch.mask)
    )
    h_hat = np.asarray(hapo_entropy_signal(batch.entropy, batch.mask), np.float64)
    lo = np.where(h_hat <= 0, 0.2 * (1 - h_hat), 0.2)
    hi = np.where(h_hat > 0, 0.28 * (1 + h_hat), 0.28)
    ratio = np.exp(logp - old)
    loss, metrics = compose(hapo_clip())(batch)
    np.testing.assert_allclose(
        loss, token_mean(np_surrogate(ratio, adv, lo, hi, 3.0), mask), rtol=1e-5
    )
    assert 0.0 < float(metrics["hapo_clip/clip_fraction"]) < 1.0
    v = np.random.default_rng(10).normal(size=logp.shape)
    eps = 1e-4

    def ref(lp):
        return token_mean(np_surrogate(np.exp(lp - old), adv, lo, hi, 3.0), mask)

    fd = (ref(logp + eps * v) - ref(logp - eps * v)) / (2 * eps)
    grad = jax.grad(lambda lp: compose(hapo_clip())(with_logp(batch, lp))[0])(batch.logp)
    np.testing.assert_allclose(np.vdot(grad, v), fd, rtol=2e-2, atol=1e-5)


def test_ref_entropy_balanced_clip():
    batch = make_batch(advantage_scale=2.0)
    logp, old, adv, mask = (
        np.asarray(x, np.float64)
        for x in (batch.logp, batch.old_logp, batch.advantages, batch.mask)
    )
    ratio = np.exp(logp - old)
    upper = (adv > 0) & (ratio > 1.28)
    assert upper[mask > 0].any()
    loss_fn = compose(entropy_balanced_clip())
    loss, metrics = loss_fn(batch)
    # The value equals the plain clipped surrogate ...
    np.testing.assert_allclose(
        loss, token_mean(np_surrogate(ratio, adv, 0.2, 0.28), mask), rtol=1e-5
    )
    np.testing.assert_allclose(
        metrics["entropy_balanced/upper_fraction"], token_mean(upper, mask), rtol=1e-6
    )
    # ... but the gradient of upper-clipped tokens is -(1 + eps_high) A instead of 0.
    lower_clipped = (adv < 0) & (ratio < 0.8)
    per_token = np.where(upper, -1.28 * adv, np.where(lower_clipped, 0.0, -adv * ratio))
    grad = jax.grad(lambda lp: loss_fn(with_logp(batch, lp))[0])(batch.logp)
    np.testing.assert_allclose(grad, per_token * mask / mask.sum(), rtol=1e-4, atol=1e-7)


def test_ref_ulorl():
    batch = make_batch()
    logp = np.log(np.array([[0.995, 0.5, 0.999, 0.2, 0.3, 0.99, 0.1]] * B, np.float32))
    adv = np.where(np.arange(B) < 3, 1.0, -1.0).astype(np.float32)
    batch = batch.replace(
        logp=jnp.asarray(logp),
        advantages=jnp.asarray(np.repeat(adv[:, None], T, axis=1)),
        entropy=jnp.full((B, T), 0.1),
    )
    selected = np.asarray(ulorl()(batch))
    mpt = (np.exp(logp) >= 0.99) & (adv[:, None] > 0) & (np.asarray(batch.mask) > 0)
    np.testing.assert_array_equal(selected, (np.asarray(batch.mask) > 0) & ~mpt)
    high = batch.replace(entropy=jnp.full((B, T), 0.5))
    np.testing.assert_array_equal(ulorl()(high), np.asarray(batch.mask) > 0)
    # As a selector on the policy-gradient term: masked tokens leave the average.
    loss, _ = compose(ppo_clip().where(ulorl()))(batch)
    full, _ = compose(ppo_clip())(batch.replace(mask=jnp.asarray(selected, jnp.float32)))
    np.testing.assert_allclose(loss, full, rtol=1e-6)
    with pytest.raises(ValueError, match="tau must be in"):
        ulorl(tau=1.5)


def test_ref_entropy_discriminator_clip():
    batch = make_batch(advantage_scale=2.0)
    logp, ent, mask = (np.asarray(x, np.float64) for x in (batch.logp, batch.entropy, batch.mask))
    adv = np.asarray(batch.advantages, np.float64)
    valid = mask > 0
    s = np.exp(logp) * (ent + logp)
    for baseline in ("batch", "vocab"):
        if baseline == "batch":
            base = s[valid].mean()
        else:
            p = np_softmax(np.asarray(batch.logits))
            base = np.sum(p * p * (ent[..., None] + np.log(p)), -1)
        c = adv * (s - base)
        z = (c - c[valid].mean()) / c[valid].std()
        got = np.asarray(entropy_discriminator_clip(1.0, baseline)(batch))
        np.testing.assert_array_equal(got, valid & (z <= 1.0))
        assert 0 < got.sum() < valid.sum()
    with pytest.raises(ValueError, match="needs PolicyBatch.logits"):
        entropy_discriminator_clip(baseline="vocab")(batch.replace(logits=None))
    with pytest.raises(ValueError, match="baseline='other' is not one of"):
        entropy_discriminator_clip(baseline="other")


def test_terms_jit_and_selectors_compose():
    batch = make_batch()
    loss_fn = compose(
        steer(), hapo_clip(), entropy_balanced_clip().where(entropy_discriminator_clip() & ulorl())
    )
    eager, _ = loss_fn(batch)
    jitted, metrics = jax.jit(loss_fn)(batch)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    assert {"steer/loss", "hapo_clip/loss", "entropy_balanced/loss"} <= set(metrics)


def test_token_shaping_methods_are_registered():
    kinds = {
        "gtpo": "advantage",
        "canon": "advantage",
        "hapo_token_group_average": "advantage",
        "steer": "intervention",
        "hapo_clip": "intervention",
        "entropy_balanced_clip": "intervention",
        "entropy_discriminator_clip": "selector",
        "ulorl": "selector",
        "pear": "reward",
        "r3": "reward",
    }
    for key, kind in kinds.items():
        info = REGISTRY[key]
        assert info.kind == kind
        for section in ("Formula:", "Paper:", "Defaults:"):
            assert section in info.doc, (key, section)
