"""ARES: difficulty-aware reward shaping by the count of high window-entropy (HWE) tokens.

Paper: "ARES: Multimodal Adaptive Reasoning via Difficulty-Aware Token-Level Entropy Shaping"
(Chen et al., 2025). Single-token entropy is noisy; its mean over a sliding window marks the
reasoning-critical stretches. ARES counts a response's high window-entropy tokens, buckets each
prompt by its pass rate (easy / medium / hard) and shapes the reward so that easy problems are
solved with fewer HWE tokens than their bucket's typical count and hard ones with more.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.losses.registry import register
from entropix.losses.rewards import _check_reward_inputs
from entropix.losses.selectors import quantile_mask
from entropix.validation import check_fraction, check_positive, check_shape

# per-bucket settings of the authors' release (easy, medium, hard)
MARGIN_FRACTION = (0.15, 0.25, 0.35)
HUBER_KAPPA = (2.0, 3.0, 4.0)
SIGMOID_TEMPERATURE = (2.0, 2.5, 3.0)
CAP_SCALE = (1.0, 1.0, 1.2)
WRONG_GAIN = (0.6, 0.8, 1.0)  # share of the cap a wrong answer's exploration earns


def window_entropy(entropy: ArrayLike, mask: ArrayLike, window: int = 4) -> jax.Array:
    """Mean token entropy over the next ``window`` valid tokens, [B, T] (0 on padding).

    Formula:
        Hbar_t = sum_{s=t}^{t+w-1} m_s H_s / sum_{s=t}^{t+w-1} m_s   (the window is cut at T)

    Args:
        entropy: [B, T] float, per-token policy entropy (nats).
        mask: [B, T] 0/1 (bool or numeric) mask of the response tokens.
        window: window length w in tokens, an int >= 1.

    Returns:
        float32 [B, T], the window entropy Hbar (0 on padding).
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1; got {window!r}")
    m = mask.astype(jnp.float32)
    h = jnp.asarray(entropy, jnp.float32) * m
    pad = jnp.zeros((m.shape[0], 1), jnp.float32)
    h_cum = jnp.concatenate([pad, jnp.cumsum(h, axis=1)], axis=1)
    m_cum = jnp.concatenate([pad, jnp.cumsum(m, axis=1)], axis=1)
    start = jnp.arange(m.shape[1])
    stop = jnp.minimum(start + window, m.shape[1])
    total = h_cum[:, stop] - h_cum[:, start]
    count = m_cum[:, stop] - m_cum[:, start]
    return jnp.where((m > 0) & (count > 0), total / jnp.maximum(count, 1.0), 0.0)


def _huber(x, kappa):
    x = jnp.maximum(x, 0.0)
    return jnp.where(x <= kappa, 0.5 * x * x / kappa, x - 0.5 * kappa)


@register(
    "ares",
    paper="ARES: Multimodal Adaptive Reasoning via Difficulty-Aware Token-Level Entropy Shaping",
    kind="reward",
)
def ares_rewards(
    rewards: ArrayLike,
    entropy: ArrayLike,
    mask: ArrayLike,
    group_ids: ArrayLike,
    window: int = 4,
    quantile: float = 0.8,
    alpha: float = 0.5,
    success_threshold: float = 1.0,
) -> jax.Array:
    """ARES hierarchical entropy reward: R' = R + a bucket-dependent bonus on the HWE count.

    Formula:
        Hbar_t  = mean entropy of the valid tokens t .. t+w-1          (window_entropy)
        HWE_t   = Hbar_t >= quantile_q(Hbar over the batch's valid tokens)
        N_i     = #HWE tokens of response i;  ok_i = R_i >= success_threshold
        p_g     = mean_{i in g} ok_i;  bucket d = easy (p >= 2/3) | medium (>= 1/3) | hard
        N*_d    = mean N_i over the batch's responses in bucket d
        delta = N_i - N*_d;  m = max(1, f_d max(N*_d, 1));  c = alpha s_d
        hub(x) = x^2 / (2 k_d) if x <= k_d else x - k_d / 2  (x floored at 0)
        sig(x) = 1 / (1 + exp(-x / T_d))
        easy ok:    -min(c, hub(delta - m) c / (m + k_d))
        medium ok:  -min(c, hub(|delta| - m) c / (m + k_d))
        hard ok:    sig(delta + m) c                             if delta >= -m
                    -min(c, hub(-delta - m) c / (2 (m + k_d)))   otherwise
        wrong:      g_d c sig(max(delta - m, 0))
        R'_i = R_i + bonus_i
        (f, k, T, s, g) = easy (0.15, 2, 2, 1, 0.6), medium (0.25, 3, 2.5, 1, 0.8),
                          hard (0.35, 4, 3, 1.2, 1)

    Paper: "ARES: Multimodal Adaptive Reasoning via Difficulty-Aware Token-Level Entropy
    Shaping" (Chen et al., 2025), Adaptive Entropy Policy Optimization's hierarchical entropy
    reward.

    Defaults: window w = 4, alpha = 0.5 and the per-bucket constants of the authors' release;
    pass-rate buckets at 1/3 and 2/3, a correct answer is R >= 1 (the release's accuracy 1).
    Our choices where the release leaves the paper's data pipeline: the HWE threshold is the
    batch's 0.8 quantile of window entropy (the release estimates a percentile online); the
    pass rate and the bucket target N*_d come from this batch (the release bootstraps them on
    the training set and updates them per step); alpha stays fixed (the release's dual ascent
    on it and the dynamic KL at HWE tokens are not included); the window is cut at the end of
    the response. Entropies are constants (rewards carry no gradient).

    ``rewards`` [B], ``entropy`` / ``mask`` [B, T], ``group_ids`` [B]. Returns R' [B].

    Args:
        rewards: [B] float, the task reward of each response.
        entropy: [B, T] float, per-token policy entropy (nats); no gradient.
        mask: [B, T] 0/1 mask of the response tokens.
        group_ids: [B] integer, the prompt group of each response.
        window: window length w in tokens, an int >= 1.
        quantile: batch quantile level in [0, 1] of the HWE threshold.
        alpha: > 0, the bonus cap scale.
        success_threshold: a response with reward >= it counts as correct.

    Returns:
        float32 [B], the shaped rewards R'.
    """
    check_fraction(quantile, "quantile")
    check_positive(alpha, "alpha")
    r, h = _check_reward_inputs(rewards, entropy, mask)
    check_shape(group_ids, "group_ids", r.shape)
    valid = mask > 0
    hbar = window_entropy(h, valid, window)
    counts = jnp.sum(quantile_mask(hbar, valid, quantile), axis=-1).astype(jnp.float32)
    ok = r >= success_threshold
    same = (group_ids[:, None] == group_ids[None, :]).astype(jnp.float32)
    pass_rate = same @ ok.astype(jnp.float32) / jnp.sum(same, axis=-1)
    bucket = jnp.where(pass_rate >= 2 / 3, 0, jnp.where(pass_rate >= 1 / 3, 1, 2))
    one_hot = jax.nn.one_hot(bucket, 3, dtype=jnp.float32)  # [B, 3]
    target = (one_hot.T @ counts) / jnp.maximum(jnp.sum(one_hot, axis=0), 1.0)
    pick = lambda table: jnp.asarray(table, jnp.float32)[bucket]  # noqa: E731
    target = target[bucket]
    delta = counts - target
    margin = jnp.maximum(1.0, pick(MARGIN_FRACTION) * jnp.maximum(target, 1.0))
    kappa, temp = pick(HUBER_KAPPA), pick(SIGMOID_TEMPERATURE)
    cap = alpha * pick(CAP_SCALE)
    scale = cap / (margin + kappa)
    sig = lambda x: jax.nn.sigmoid(x / temp)  # noqa: E731
    easy_ok = -jnp.minimum(cap, _huber(delta - margin, kappa) * scale)
    medium_ok = -jnp.minimum(cap, _huber(jnp.abs(delta) - margin, kappa) * scale)
    hard_ok = jnp.where(
        delta >= -margin,
        sig(delta + margin) * cap,
        -jnp.minimum(cap, 0.5 * _huber(-delta - margin, kappa) * scale),
    )
    correct = jnp.where(bucket == 0, easy_ok, jnp.where(bucket == 1, medium_ok, hard_ok))
    wrong = pick(WRONG_GAIN) * cap * sig(jnp.maximum(delta - margin, 0.0))
    return r + jnp.where(ok, correct, wrong)
