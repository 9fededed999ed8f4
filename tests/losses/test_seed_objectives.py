"""ARES, COPO, ADORA, SPEAR, CurioSFT and EAST against independent numpy references."""

import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import entropix.losses as L
from entropix.models import Llama, get_preset, residual_activations
from entropix.models.steering import SteeringConfig, east, entropy_direction

RNG = np.random.default_rng(0)


def batch_inputs(b=12, t=7, groups=3):
    rewards = RNG.choice([0.0, 1.0], size=b).astype(np.float32)
    entropy = RNG.uniform(0.0, 2.0, size=(b, t)).astype(np.float32)
    lengths = RNG.integers(2, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)
    group_ids = np.repeat(np.arange(groups), b // groups).astype(np.int32)
    return rewards, entropy, mask, group_ids


# --- ARES -------------------------------------------------------------------------------------


def np_ares(r, h, m, g, w=4, q=0.8, alpha=0.5, thr=1.0):
    b, t = h.shape
    hbar = np.zeros((b, t))
    for i in range(b):
        for s in range(t):
            window = [u for u in range(s, min(s + w, t)) if m[i, u]]
            if m[i, s]:
                hbar[i, s] = np.mean(h[i, window])
    tau = np.quantile(hbar[m > 0], q)
    n = np.array([np.sum((hbar[i] >= tau) & (m[i] > 0)) for i in range(b)], float)
    ok = r >= thr
    rate = {k: ok[g == k].mean() for k in set(g)}
    names = ["easy" if rate[k] >= 2 / 3 else "medium" if rate[k] >= 1 / 3 else "hard" for k in g]
    target = {d: n[[x == d for x in names]].mean() for d in set(names)}
    frac = {"easy": 0.15, "medium": 0.25, "hard": 0.35}
    kappa = {"easy": 2.0, "medium": 3.0, "hard": 4.0}
    temp = {"easy": 2.0, "medium": 2.5, "hard": 3.0}
    capscale = {"easy": 1.0, "medium": 1.0, "hard": 1.2}

    def huber(x, k):
        x = max(x, 0.0)
        return 0.5 * x * x / k if x <= k else x - 0.5 * k

    def sig(x, tt):
        return 1.0 / (1.0 + math.exp(-x / tt))

    out = []
    for i, d in enumerate(names):
        delta = n[i] - target[d]
        margin = max(1.0, frac[d] * max(target[d], 1.0))
        k, tt, cap = kappa[d], temp[d], alpha * capscale[d]
        if ok[i]:
            if d == "easy":
                bonus = -min(cap, huber(delta - margin, k) / (margin + k) * cap)
            elif d == "medium":
                bonus = -min(cap, huber(abs(delta) - margin, k) / (margin + k) * cap)
            elif delta >= -margin:
                bonus = sig(delta + margin, tt) * cap
            else:
                bonus = -min(cap, 0.5 * huber(-delta - margin, k) / (margin + k) * cap)
        else:
            gain = {"easy": 0.6, "medium": 0.8, "hard": 1.0}[d]
            bonus = sig(max(delta - margin, 0.0), tt) * cap * gain
        out.append(r[i] + bonus)
    return np.array(out)


def test_ref_ares():
    ares = jax.jit(L.ares_rewards)  # one compilation for the three draws
    for seed in range(3):
        global RNG
        RNG = np.random.default_rng(seed)
        r, h, m, g = batch_inputs()
        got = ares(jnp.asarray(r), jnp.asarray(h), jnp.asarray(m), jnp.asarray(g))
        np.testing.assert_allclose(got, np_ares(r, h, m, g), rtol=1e-5, atol=1e-6)


def test_ares_window_is_cut_at_the_response_end():
    h = jnp.array([[1.0, 2.0, 3.0, 9.0]])
    m = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    np.testing.assert_allclose(L.window_entropy(h, m, 2), [[1.5, 2.5, 3.0, 0.0]])
    with pytest.raises(ValueError, match="window must be an integer"):
        L.window_entropy(h, m, 0)


def test_ares_buckets_steer_easy_down_and_hard_up():
    # one easy and one hard group; within each, responses differ only in their HWE count
    h = np.zeros((8, 8), np.float32)
    for i, count in enumerate([0, 6, 0, 6, 0, 6, 0, 6]):
        h[i, :count] = 2.0
    m = np.ones_like(h)
    r = np.array([1, 1, 1, 1, 0, 0, 0, 1], np.float32)
    g = np.repeat([0, 1], 4).astype(np.int32)
    ares = jax.jit(L.ares_rewards, static_argnames="quantile")
    shaped = np.asarray(ares(r, h, m, g, quantile=0.65)) - r
    assert shaped[0] > shaped[1]  # easy, correct: fewer HWE tokens are better
    assert shaped[7] > 0  # hard, correct, above target: rewarded for exploring


# --- COPO -------------------------------------------------------------------------------------


def np_copo(adv, r, g, k=20.0, b=0.5):
    groups = sorted(set(g))
    means = {q: r[g == q].mean() for q in groups}
    vals = np.array([means[q] for q in groups])
    mu, sd = vals.mean(), vals.std(ddof=1)
    out = np.zeros_like(adv)
    for i in range(len(r)):
        counts = Counter(r[g == g[i]].tolist())
        total = sum(counts.values())
        ent = -sum(c / total * math.log2(c / total) for c in counts.values())
        w = 1 / (1 + math.exp(-k * (ent - b))) if adv[i] != 0 else 0.0
        out[i] = w * adv[i] + (1 - w) * (means[g[i]] - mu) / (sd + 1e-6)
    return out


def test_ref_copo():
    r = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0], np.float32)
    g = np.repeat(np.arange(4), 4).astype(np.int32)
    adv = np.asarray(L.grpo_advantages(jnp.asarray(r), jnp.asarray(g)))
    got = L.copo_advantages(jnp.asarray(adv), jnp.asarray(r), jnp.asarray(g))
    np.testing.assert_allclose(got, np_copo(adv, r, g), rtol=1e-5, atol=1e-6)
    # consistent groups (all right / all wrong) get a non-zero global signal
    assert np.all(np.asarray(got)[:4] > 0) and np.all(np.asarray(got)[8:12] < 0)


def test_copo_token_advantages_and_one_group():
    r = jnp.array([1.0, 0.0, 1.0, 1.0])
    g = jnp.array([0, 0, 0, 0])
    adv = L.grpo_advantages(r, g)
    np.testing.assert_allclose(L.global_advantages(r, g), 0.0)  # one group: no global signal
    tokens = L.copo_advantages(jnp.broadcast_to(adv[:, None], (4, 3)), r, g)
    per_row = L.copo_advantages(adv, r, g)
    np.testing.assert_allclose(tokens, jnp.broadcast_to(per_row[:, None], (4, 3)))
    with pytest.raises(ValueError, match="k must be > 0"):
        L.copo_advantages(adv, r, g, k=0.0)


# --- ADORA ------------------------------------------------------------------------------------


def np_adora(adv, r, m, g, lamda=0.1, thr=1.0):
    out = adv.copy()
    length = m.sum(1)
    for q in set(g):
        rows = g == q
        pos = length[rows & (r >= thr)]
        neg = length[rows & (r < thr) & (length < m.shape[1])]
        best = pos.max() if pos.size else -np.inf
        mean_neg = neg.mean() if neg.size else -np.inf
        if not best > mean_neg:
            out[rows] *= lamda
    return out


def test_ref_adora():
    adora = jax.jit(L.adora_advantages)
    for seed in range(3):
        global RNG
        RNG = np.random.default_rng(10 + seed)
        r, _, m, g = batch_inputs(b=16, t=6, groups=4)
        adv = np.asarray(L.grpo_advantages(jnp.asarray(r), jnp.asarray(g)))
        got = adora(jnp.asarray(adv), jnp.asarray(r), jnp.asarray(m), jnp.asarray(g))
        np.testing.assert_allclose(got, np_adora(adv, r, m, g), rtol=1e-6)


def test_adora_truncated_wrong_replies_are_left_out():
    r = np.array([1.0, 0.0, 0.0], np.float32)
    m = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], np.float32)  # row 1: truncated
    g = np.zeros(3, np.int32)
    assert bool(L.length_advantage(r, m, g)[0])  # 2 > mean([1]), the truncated 4 ignored
    m[2] = [1, 1, 1, 0]
    assert not bool(L.length_advantage(r, m, g)[0])  # 2 > 3 fails: attenuated
    with pytest.raises(ValueError, match="lamda must lie in"):
        L.adora_advantages(jnp.zeros(3), r, m, g, lamda=2.0)


# --- SPEAR ------------------------------------------------------------------------------------


def spear_batch(step):
    logp = RNG.normal(-1.0, 0.3, size=(6, 5)).astype(np.float32)
    old = logp + RNG.normal(0.0, 0.3, size=logp.shape).astype(np.float32)
    adv = RNG.uniform(0.1, 1.0, size=6).astype(np.float32)
    mask = (RNG.uniform(size=logp.shape) > 0.2).astype(np.float32)
    batch = L.make_policy_batch(
        jnp.asarray(logp), jnp.asarray(adv), jnp.asarray(mask), old_logp=jnp.asarray(old),
        key=jax.random.PRNGKey(0), controls={"step": jnp.asarray(step)},
    )  # fmt: skip
    return batch, logp, old, adv, mask


def test_ref_spear():
    terms = [jax.jit(t.evaluate) for t in (L.spear(clip_cov_ratio=None), L.spear())]
    for step in (0, 30, 100, 250):
        batch, logp, old, adv, mask = spear_batch(step)
        ratio = np.exp(logp.astype(np.float64) - old)
        a = adv[:, None].astype(np.float64)
        per_token = np.maximum(-a * ratio, -a * np.clip(ratio, 0.8, 1.28))
        gamma = 0.5 * (1 - math.cos(math.pi * min(step / 100, 1.0)))
        expected = gamma * (per_token * mask).sum() / mask.sum()
        for evaluate in terms:  # without and with Clip-Cov, which leaves the value
            value, metrics = evaluate(batch)
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(metrics["weight"], gamma, rtol=1e-6, atol=1e-7)


def test_spear_is_a_replay_term_with_the_paper_buffer():
    term = L.spear()
    assert isinstance(term, L.ReplayTerm) and term.controls == ("step",)
    assert term.replay == L.ReplaySettings(2048, 5, 10240, 1.0)
    assert isinstance(term.with_coef(0.5), L.ReplayTerm)  # builders keep the settings
    with pytest.raises(ValueError, match="ramp_steps must be"):
        L.spear(ramp_steps=0)
    with pytest.raises(ValueError, match="capacity must be"):
        L.spear(capacity=0)


# --- CurioSFT ---------------------------------------------------------------------------------


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_ref_curio_sft():
    z = RNG.normal(0.0, 2.0, size=(4, 5, 7)).astype(np.float32)
    mask = np.ones((4, 5), np.float32)
    mask[3, 2:] = 0
    logp_all = np_log_softmax(z.astype(np.float64))
    entropy = -(np.exp(logp_all) * logp_all).sum(-1)
    tau_q = np.quantile(entropy[mask > 0], 0.8)
    tau = np.where(entropy >= tau_q, 2.0, 1.0)
    log_q = np_log_softmax(z / tau[..., None])
    kl = (np.exp(log_q) * (log_q - logp_all)).sum(-1)
    expected = (kl * mask).sum() / mask.sum()
    batch = L.make_policy_batch(
        jnp.asarray(logp_all[..., 0], jnp.float32), jnp.zeros(4), jnp.asarray(mask),
        logits=jnp.asarray(z),
    )  # fmt: skip
    value, metrics = jax.jit(L.curio_sft().evaluate)(batch)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["hot_fraction"], np.mean(tau[mask > 0] > 1), rtol=1e-6)


def test_curio_sft_leaves_low_entropy_tokens_alone():
    """Below the entropy quantile the teacher is the model itself: no loss, no gradient."""
    z = jnp.asarray(RNG.normal(0.0, 2.0, size=(2, 6, 5)), jnp.float32)
    term = L.curio_sft(quantile=1.0)  # only the single highest-entropy token is hot

    def loss(z):
        batch = L.make_policy_batch(jnp.zeros((2, 6)), jnp.zeros(2), logits=z)
        return term.evaluate(batch)[0]

    grad = np.asarray(jax.jit(jax.grad(loss))(z))
    moved = np.abs(grad).max(-1) > 1e-6  # tau = 1: KL(sg(p) || p) has zero gradient
    assert moved.sum() == 1
    with pytest.raises(ValueError, match="temperature must be > 1"):
        L.curio_sft(temperature=1.0)


# --- EAST -------------------------------------------------------------------------------------


def test_ref_east():
    config = get_preset(
        "tiny", vocab_size=16, dim=8, num_layers=2, num_heads=2, num_kv_heads=1, ffn_dim=16,
        init_std=0.2,
    )  # fmt: skip
    model = Llama(config, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.PRNGKey(0), (10, 4), 0, 16)
    states = np.asarray(residual_activations(model, tokens, layer=1))
    entropy = RNG.uniform(size=10)
    last = states[:, -1]
    high = entropy > np.quantile(entropy, 0.5)
    v = last[high].mean(0) - last[~high].mean(0)
    np.testing.assert_allclose(entropy_direction(last, entropy), v, rtol=1e-5, atol=1e-6)
    # steering the last block: the final hidden state is RMSNorm(x + alpha v) (weights 1)
    steered = east(model, last, entropy, SteeringConfig(layer=1, alpha=1.5))
    x = states + 1.5 * v
    normed = x / np.sqrt((x * x).mean(-1, keepdims=True) + config.rms_eps)
    np.testing.assert_allclose(steered(tokens).hidden, normed, rtol=1e-4, atol=1e-5)
