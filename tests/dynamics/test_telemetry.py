"""Entropy telemetry against numpy on a fixed batch, and the softmax bandit under plain SGD:
the JVP prediction, the logit-space law and the tabular PG step agree."""

import jax
import jax.numpy as jnp
import numpy as np

from entropix.dynamics import (
    FORKING,
    QUADRANTS,
    dynamics_metrics,
    pg_logit_update,
    predicted_entropy_change,
    token_groups,
)

B, N = 6, 10


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, N + 1, B)
    lengths[0] = 1  # position bins past the first are empty for this row
    mask = (np.arange(N)[None, :] < lengths[:, None]).astype(np.float32)
    return {
        "h0": rng.uniform(0.0, 2.0, (B, N)).astype(np.float32),
        "h1": rng.uniform(0.0, 2.0, (B, N)).astype(np.float32),
        "dh": rng.normal(0.0, 1e-2, (B, N)).astype(np.float32),
        "law": rng.normal(0.0, 1e-2, (B, N)).astype(np.float32),
        "logp": np.log(rng.uniform(0.05, 1.0, (B, N))).astype(np.float32),
        "logp_after": np.log(rng.uniform(0.05, 1.0, (B, N))).astype(np.float32),
        "dz_sampled": rng.normal(0.0, 1e-1, (B, N)).astype(np.float32),
        "advantages": np.array([1.0, -0.5, 0.0, 2.0, -1.0, 0.0], np.float32),
        "mask": mask,
    }


def _numpy_metrics(b, prob_threshold, forking_quantile, forking_entropy, bins):
    m = b["mask"] > 0
    a = np.broadcast_to(b["advantages"][:, None], (B, N))
    n = m.sum()
    h0, dh, logp = b["h0"], b["dh"], b["logp"]
    out = {
        "dH/measured": (b["h1"] - h0)[m].mean(),
        "dH/predicted": dh[m].mean(),
        "dH/logit_law": b["law"][m].mean(),
    }
    lp, dz = logp[m], b["dz_sampled"][m]
    out["dH/sampled_cov"] = -np.mean((lp - lp.mean()) * (dz - dz.mean()))
    prob = np.exp(logp)
    cut = np.quantile(h0[m], forking_quantile)
    groups = {
        "pos_high": (a > 0) & (prob >= prob_threshold),
        "pos_low": (a > 0) & (prob < prob_threshold),
        "neg_high": (a < 0) & (prob >= prob_threshold),
        "neg_low": (a < 0) & (prob < prob_threshold),
        "zero": a == 0,
        "forking": (h0 >= cut) & (h0 > h0[m].min()),
        "non_forking": (h0 < cut) | (h0 == h0[m].min()),
    }
    for name, g in groups.items():
        out[f"dH/pred/{name}"] = dh[m & g].sum() / n
    out["entropy/p10"], out["entropy/p50"], out["entropy/p90"] = np.quantile(h0[m], [0.1, 0.5, 0.9])
    out["entropy/pos_adv"] = h0[m & (a > 0)].mean()
    out["entropy/neg_adv"] = h0[m & (a < 0)].mean()
    out["entropy/forking_fraction"] = (h0[m] > forking_entropy).mean()
    cov = (logp - lp.mean()) * (a - a[m].mean())
    out["cov/positive_fraction"] = (cov[m] > 1e-6 * np.abs(cov[m]).mean()).mean()
    moved = np.abs(b["logp_after"] - logp)[m]
    out["dlogp/mean"], out["dlogp/max"] = moved.mean(), moved.max()
    for i in range(bins):
        cols = [t for t in range(N) if t * bins // N == i]
        values = h0[:, cols][m[:, cols]]
        out[f"entropy/position/{i}"] = values.mean() if values.size else np.nan
    return out


def test_dynamics_metrics_match_numpy():
    b = _batch()
    settings = dict(prob_threshold=0.4, forking_quantile=0.8, forking_entropy=0.9)
    got = jax.jit(lambda b: dynamics_metrics(**b, **settings, position_bins=4))(b)
    want = _numpy_metrics(b, **settings, bins=4)
    assert set(got) == set(want)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-7, err_msg=key)


def test_second_order_is_the_taylor_series_to_second_order():
    b = _batch(4)
    d2h = np.random.default_rng(4).normal(0.0, 1e-2, (B, N)).astype(np.float32)
    m = b["mask"] > 0
    got = dynamics_metrics(**b, d2h=d2h)
    np.testing.assert_allclose(got["dH/second_order"], (b["dh"] + d2h / 2)[m].mean(), rtol=1e-5)
    assert "dH/second_order" not in dynamics_metrics(**b)


def test_group_parts_sum_to_the_prediction_and_empty_bins_are_nan():
    b = _batch(1)
    b["mask"][:, N // 2 :] = 0.0  # the second half of the positions holds no token
    got = dynamics_metrics(**b, position_bins=2)
    for groups in (QUADRANTS, FORKING):
        total = sum(float(got[f"dH/pred/{g}"]) for g in groups)
        np.testing.assert_allclose(total, got["dH/predicted"], rtol=1e-5)
    assert np.isfinite(got["entropy/position/0"]) and np.isnan(got["entropy/position/1"])
    b["advantages"] = np.abs(b["advantages"])  # no negative advantage
    assert np.isnan(dynamics_metrics(**b)["entropy/neg_adv"])


def test_forking_tokens_under_ties():
    """90% of the tokens at exactly 0 nats (a collapsed policy): the 0.8 quantile is 0, and only
    the tokens above it are forking; with every entropy equal no token is; tokens tied at a
    cutoff above the lowest entropy (one prompt's responses share a first token) all are."""
    b = _batch(2)
    mask, advantages, prob = b["mask"] > 0, b["advantages"][:, None], np.exp(b["logp"])
    h0 = np.zeros(mask.shape, np.float32)
    h0[np.nonzero(mask)[0][:2], np.nonzero(mask)[1][:2]] = (1.0, 1.5)  # 2 of 23 tokens above 0
    groups = token_groups(advantages, prob, h0, b["mask"], 0.5, 0.8)
    np.testing.assert_array_equal(groups["forking"], mask & (h0 > 0))
    assert 0 < groups["forking"][mask].mean() < 0.2
    flat = token_groups(advantages, prob, 0.7 * b["mask"], b["mask"])
    assert not flat["forking"].any() and (flat["non_forking"] == mask).all()
    tied = np.where(mask, np.arange(B * N, dtype=np.float32).reshape(B, N) / (B * N), 0.0)
    low = np.sort(tied[mask])[int(0.8 * (mask.sum() - 1))]  # the order statistic below q 0.8
    tied[mask & (tied >= low)] = 2.0  # the top tokens share one entropy: the quantile is it
    assert np.quantile(tied[mask], 0.8) == 2.0
    groups = token_groups(advantages, prob, tied, b["mask"])
    np.testing.assert_array_equal(groups["forking"], mask & (tied == 2.0))


def _entropy(z):
    logp = jax.nn.log_softmax(z, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def test_sgd_on_a_softmax_bandit_jvp_and_logit_law_agree():
    """Logits are the parameters; one plain SGD step on J = E_pi r. The step's first-order
    entropy change by JVP, the logit-space law with the step as dz, and the law with the
    tabular vanilla-PG step of the paper are one number, and match the measured change."""
    key_r, key_z = jax.random.split(jax.random.PRNGKey(3))
    rewards = jax.random.uniform(key_r, (5, 12))  # 5 independent bandits, 12 arms
    z = jax.random.normal(key_z, (5, 12))
    lr = 1e-2
    objective = lambda z: jnp.sum(jax.nn.softmax(z, axis=-1) * rewards)  # noqa: E731
    delta = lr * jax.grad(objective)(z)  # gradient ascent = SGD on -J
    _, jvp = jax.jvp(_entropy, (z,), (delta,))
    law = predicted_entropy_change(z, delta)
    np.testing.assert_allclose(delta, pg_logit_update(z, rewards, lr), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(jvp, law, rtol=1e-4, atol=1e-9)
    measured = _entropy(z + delta) - _entropy(z)
    np.testing.assert_allclose(jvp, measured, rtol=5e-2, atol=1e-6)
    assert float(jnp.max(jnp.abs(jvp))) > 1e-4
