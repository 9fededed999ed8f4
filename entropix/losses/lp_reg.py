"""Lp-Reg: protect low-probability "reasoning sparks" with a KL pull toward a denoised proxy
("Low-probability Tokens Sustain Exploration in Reinforcement Learning with Verifiable
Reward", Huang et al., 2025).
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import log_softmax, masked_mean
from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.registry import register
from entropix.losses.selectors import fraction_count, top_k_mask, valid_count
from entropix.validation import check_positive


def proxy_kl(logits: ArrayLike, min_p: float = 0.02) -> tuple[jax.Array, jax.Array]:
    """KL(sg(pi_proxy) || pi) per position, with pi_proxy = pi renormalised over
    {v : pi(v) > min_p * max_u pi(u)} (the "noise" tail removed). Returns (kl, threshold).

    With Z = sum_{kept} pi the KL is -log Z in value, and its gradient in the logits is
    pi - pi_proxy (the proxy is a constant target); both are written out directly, so no
    gradient is traced back through the softmax.

    Args:
        logits: [..., V] float, the policy's logits at each position (e.g. [B, T, V]).
        min_p: relative threshold in (0, 1): a class is kept when its probability exceeds
            ``min_p`` times the largest.

    Returns:
        ``(kl, threshold)``, both float32 [...]: the KL (nats) and the absolute probability
        threshold tau = min_p * max pi at each position.
    """
    z = jnp.asarray(logits, jnp.float32)
    logp = jax.lax.stop_gradient(log_softmax(z))
    p = jnp.exp(logp)
    threshold = min_p * jnp.max(p, axis=-1)
    keep = p > threshold[..., None]
    kept_p = jnp.where(keep, p, 0.0)
    mass = jnp.sum(kept_p, axis=-1)
    p_minus_proxy = p - kept_p / mass[..., None]
    # zero in value; its gradient in the logits is pi - pi_proxy (0 on classes with pi = 0)
    tangent = jnp.where(p > 0, z - jax.lax.stop_gradient(z), 0.0)
    kl = jnp.sum(p_minus_proxy * tangent, axis=-1) - jnp.log(mass)
    return kl, threshold


@register(
    "lp_reg",
    paper="Low-probability Tokens Sustain Exploration in Reinforcement Learning with "
    "Verifiable Reward",
    kind="intervention",
)
def lp_reg(coef: float = 1.0, rho: float = 0.01, min_p: float = 0.02) -> Term:
    """Lp-Reg: forward KL toward a tail-filtered proxy on low-probability negative tokens.

    Formula:
        tau_t = min_p * max_v pi(v | y_<t)
        pi_proxy(v) = pi(v) 1[pi(v) > tau_t] / sum_u pi(u) 1[pi(u) > tau_t]     (no gradient)
        I = the max(1, floor(rho N_neg)) tokens with A_t < 0 and the lowest logp_t,
            kept only where the sampled token survives the filter (pi(y_t) > tau_t)
        loss_t = KL(pi_proxy || pi)_t for t in I, 0 otherwise              (weighted by coef)

    Paper: Low-probability Tokens Sustain Exploration in Reinforcement Learning with
    Verifiable Reward (Huang et al., 2025).

    Defaults: coef beta = 1, rho = 1% of the negative-advantage tokens, min_p kappa = 0.02
    (the proxy's relative threshold). Our choices: the KL is computed exactly over the
    vocabulary from ``batch.logits`` (the authors' code uses a one-sample estimate at the
    sampled token); the term is averaged over all valid tokens, zero outside I, like KL-Cov.
    Needs ``batch.logits``; ``batch.logp`` must be the log-prob of the sampled token.

    Args:
        coef: > 0, the KL weight beta.
        rho: fraction of the negative-advantage tokens selected, 0 < rho <= 1.
        min_p: the proxy's relative threshold kappa, 0 < min_p < 1.

    Returns:
        A per-token :class:`Term` named ``"lp_reg"`` (needs ``logits``) with metric
        ``selected_fraction``.
    """
    check_positive(coef, "coef")
    check_positive(rho, "rho")
    check_positive(min_p, "min_p")
    if rho > 1 or min_p >= 1:
        raise ValueError(f"rho must be <= 1 and min_p < 1; got rho={rho}, min_p={min_p}")

    def fn(batch: PolicyBatch, mask):
        logits = batch.require("logits", "lp_reg")
        kl, threshold = proxy_kl(logits, min_p)
        logp = jax.lax.stop_gradient(jnp.asarray(batch.logp, jnp.float32))
        negative = (mask > 0) & (batch.advantages < 0)
        lowest = top_k_mask(-logp, negative, fraction_count(rho, valid_count(negative)))
        selected = lowest & (jnp.exp(logp) > threshold)
        values = jnp.where(selected, kl, 0.0)
        return values, {"selected_fraction": masked_mean(selected.astype(jnp.float32), mask)}

    return Term("lp_reg", fn, coef=coef, needs=("logits",))
