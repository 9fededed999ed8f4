"""HAPO: entropy-driven asymmetric adaptive clipping and token-level group-average advantages.

Paper: "From Uniform to Heterogeneous: Tailoring Policy Optimization to Every Token's Nature"
(Liu et al., 2025), Heterogeneous Adaptive Policy Optimization. Two of its four components live
here: Asymmetric Adaptive Clipping (per-token clip bounds from a normalised entropy signal) and
Token-Level Group Average advantages. Adaptive temperature sampling belongs to the rollout
layer; differential advantage redistribution is not implemented.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import masked_mean
from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.objectives import clipped_surrogate, policy_ratio
from entropix.losses.registry import register
from entropix.losses.selectors import order_statistic
from entropix.validation import check_mask, check_positive, check_shape


def hapo_entropy_signal(
    entropy: ArrayLike, mask: ArrayLike, pivot: float = 0.5, eps: float = 1e-8
) -> jax.Array:
    """Normalised entropy signal h_hat in [-1, 1]: > 0 for high-entropy tokens, < 0 for low.

    Formula:
        (over the valid tokens of the batch)
        u = log(max(H, eps)),  c = pivot-quantile of u (nearest rank),  s = sqrt(mean (u - c)^2)
        h = (u - c) / s
        h_hat = h / max(h)      where h > 0
        h_hat = h / |min(h)|    where h <= 0
    The authors' release divides the negative side by min(h) itself, which flips its sign and
    makes every token "high-entropy"; we keep the sign, as the paper's description requires.
    No gradient flows through h_hat.

    Args:
        entropy: [B, T] float, per-token policy entropy (nats).
        mask: [B, T] 0/1 mask of the tokens the statistics are taken over.
        pivot: quantile level in [0, 1] of the centre c (0.5: the median).
        eps: > 0, floor of the entropy before the log and of the scales.

    Returns:
        float32 [B, T], h_hat in [-1, 1] (stop-gradient).
    """
    check_mask(mask, "mask", jnp.shape(entropy))
    valid = mask.astype(bool)
    u = jnp.log(jnp.maximum(jax.lax.stop_gradient(jnp.asarray(entropy, jnp.float32)), eps))
    n = jnp.sum(valid)
    rank = jnp.round(pivot * (jnp.maximum(n, 1) - 1)).astype(jnp.int32)
    centre = jnp.where(n > 0, order_statistic(u, valid, rank), 0.0)
    d = jnp.where(valid, u - centre, 0.0)
    scale = jnp.sqrt(jnp.maximum(jnp.sum(d**2) / jnp.maximum(n, 1), eps))
    h = d / scale
    pos_max = jnp.maximum(jnp.max(jnp.where(valid & (h > 0), h, 0.0)), eps)
    neg_max = jnp.maximum(jnp.max(jnp.where(valid & (h < 0), -h, 0.0)), eps)
    return jnp.where(h > 0, h / pos_max, h / neg_max)


def hapo_clip_bounds(
    h_hat: ArrayLike, eps_low: float = 0.2, eps_high: float = 0.28, alpha: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Per-token clip ranges: widen the lower one for low entropy, the upper one for high entropy.

    Formula:
        eps_low_t  = eps_low  * (1 - alpha * h_hat)   if h_hat <= 0,  else eps_low
        eps_high_t = eps_high * (1 + alpha * h_hat)   if h_hat >  0,  else eps_high
    Returns ``(eps_low_t, eps_high_t)``, each shaped like ``h_hat``.

    Args:
        h_hat: float array, the entropy signal in [-1, 1] (:func:`hapo_entropy_signal`).
        eps_low: base lower clip width.
        eps_high: base upper clip width.
        alpha: how strongly the signal widens the bounds (>= 0).

    Returns:
        ``(eps_low_t, eps_high_t)``: float arrays of ``h_hat``'s shape.
    """
    low = jnp.where(h_hat <= 0, eps_low * (1.0 - alpha * h_hat), eps_low)
    high = jnp.where(h_hat > 0, eps_high * (1.0 + alpha * h_hat), eps_high)
    return low, high


@register(
    "hapo_token_group_average",
    paper="From Uniform to Heterogeneous: Tailoring Policy Optimization to Every Token's Nature",
    kind="advantage",
)
def token_level_group_advantages(
    rewards: ArrayLike, group_ids: ArrayLike, mask: ArrayLike, eps: float = 1e-6
) -> jax.Array:
    """HAPO Token-Level Group Average advantages: group statistics weighted by response length.

    Formula:
        (group g, response i with L_i valid tokens and reward r_i)
        mu_g    = sum_{i in g} L_i r_i / sum_{i in g} L_i
        sigma_g = sqrt(sum_{i in g} L_i (r_i - mu_g)^2 / sum_{i in g} L_i)
        A_i     = (r_i - mu_g) / (sigma_g + eps)
    Every token of a group counts once, matching token-mean aggregation. Returns [B].

    Paper: "From Uniform to Heterogeneous: Tailoring Policy Optimization to Every Token's
    Nature" (Liu et al., 2025).

    Defaults: eps = 1e-6. The authors' release falls back to plain GRPO advantages for a group
    whose normalised advantage reaches 5 in magnitude; we do not.

    Args:
        rewards: [B] float, the scalar reward of each response.
        group_ids: [B] integer, the prompt group of each response.
        mask: [B, T] 0/1 mask of the response tokens (gives the lengths L_i).
        eps: > 0, added to sigma_g before dividing.

    Returns:
        float32 [B], the advantage of each response.
    """
    b = jnp.shape(rewards)[0]
    check_shape(group_ids, "group_ids", (b,))
    check_mask(mask, "mask", (b, jnp.shape(mask)[-1]))
    lengths = jnp.sum(mask.astype(jnp.float32), axis=-1)
    r = jnp.asarray(rewards, jnp.float32)
    same = (group_ids[:, None] == group_ids[None, :]).astype(jnp.float32)
    weight = same * lengths[None, :]
    total = jnp.maximum(jnp.sum(weight, axis=-1), 1.0)
    mean = jnp.sum(weight * r[None, :], axis=-1) / total
    var = jnp.sum(weight * (r[None, :] - mean[:, None]) ** 2, axis=-1) / total
    return (r - mean) / (jnp.sqrt(var) + eps)


@register(
    "hapo_clip",
    paper="From Uniform to Heterogeneous: Tailoring Policy Optimization to Every Token's Nature",
    kind="intervention",
)
def hapo_clip(
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    alpha: float = 1.0,
    pivot: float = 0.5,
    dual_clip: float | None = 3.0,
    coef: float = 1.0,
) -> Term:
    """HAPO Asymmetric Adaptive Clipping: per-token clip bounds set by the token's entropy.

    Formula:
        h_hat_t = normalised log-entropy signal in [-1, 1] (:func:`hapo_entropy_signal`)
        eps_low_t  = eps_low  (1 - alpha h_hat_t)  if h_hat_t <= 0   (low entropy may fall more)
        eps_high_t = eps_high (1 + alpha h_hat_t)  if h_hat_t >  0   (high entropy may rise more)
        l_t = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low_t, 1 + eps_high_t))
              (dual clip min(., -c A_t) for A_t < 0)

    Paper: "From Uniform to Heterogeneous: Tailoring Policy Optimization to Every Token's
    Nature" (Liu et al., 2025).

    Defaults: eps_low = 0.2, eps_high = 0.28 (HAPO builds on DAPO), alpha = 1, pivot 0.5 (the
    median), dual clip c = 3 as in this library's ppo_clip. The entropy statistics are taken
    over the term's tokens. Needs ``batch.entropy``. Metrics: ``clip_fraction``,
    ``eps_low_mean``, ``eps_high_mean``.

    Args:
        eps_low: base lower clip width, > 0.
        eps_high: base upper clip width, > 0.
        alpha: how strongly the entropy signal widens the bounds.
        pivot: quantile level in [0, 1] of the entropy signal's centre.
        dual_clip: dual-clip constant c > 1, or None for no dual clip.
        coef: weight of the term in the composed loss.

    Returns:
        A per-token :class:`Term` named ``"hapo_clip"``.
    """
    check_positive(eps_low, "eps_low")
    check_positive(eps_high, "eps_high")
    if not 0.0 <= pivot <= 1.0:
        raise ValueError(f"pivot must be a quantile in [0, 1]; got {pivot}")

    def fn(batch: PolicyBatch, mask):
        entropy = batch.require("entropy", "hapo_clip")
        h_hat = hapo_entropy_signal(entropy, mask, pivot)
        low, high = hapo_clip_bounds(h_hat, eps_low, eps_high, alpha)
        # A lower bound 1 - eps_low_t below 0 would let the ratio term change sign.
        low = jnp.minimum(low, 1.0)
        loss, is_clipped, _ = clipped_surrogate(
            policy_ratio(batch), batch.advantages, low, high, dual_clip
        )
        metrics = {
            "clip_fraction": masked_mean(is_clipped.astype(jnp.float32), mask),
            "eps_low_mean": masked_mean(low, mask),
            "eps_high_mean": masked_mean(high, mask),
        }
        return loss, metrics

    return Term("hapo_clip", fn, coef=coef)
