"""BAPO: balanced policy optimisation with adaptive clipping ("BAPO: Stabilizing Off-Policy
Reinforcement Learning for LLMs via Balanced Policy Optimization with Adaptive Clipping",
Xi et al., 2025).

Each step the ratio bounds [c_low, c_high] start at (a_low, a_high) and move up in steps until
the positive-advantage tokens carry at least rho0 of the surrogate's gradient-carrying mass:

    rho(c_low, c_high) = P / (P + N)
    P = sum_{A_t > 0, r_t <= c_high} r_t A_t          (positive tokens the clip lets through)
    N = sum_{A_t < 0, r_t >= c_low} r_t |A_t|         (negative tokens the clip lets through)

Raising c_high admits more low-probability positive tokens; raising c_low filters more
low-probability negative tokens; both raise rho.
"""

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import masked_mean
from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.objectives import clipped_surrogate, policy_ratio
from entropix.losses.registry import register
from entropix.validation import check_positive


def positive_contribution(
    ratio: ArrayLike,
    advantages: ArrayLike,
    mask: ArrayLike,
    c_low: float | ArrayLike,
    c_high: float | ArrayLike,
) -> jax.Array:
    """rho = P / (P + N) of the module docstring (1 when nothing carries gradient).

    Args:
        ratio: [B, T] float, the importance ratio r_t.
        advantages: [B, T] float, the advantage A_t.
        mask: [B, T] validity mask (> 0 counts).
        c_low: lower ratio bound (scalar).
        c_high: upper ratio bound (scalar).

    Returns:
        The float32 scalar rho in [0, 1].
    """
    r = jnp.asarray(ratio, jnp.float32)
    adv = jnp.asarray(advantages, jnp.float32)
    m = mask > 0
    pos = jnp.sum(jnp.where(m & (adv > 0) & (r <= c_high), r * adv, 0.0))
    neg = jnp.sum(jnp.where(m & (adv < 0) & (r >= c_low), r * -adv, 0.0))
    total = pos + neg
    return jnp.where(total > 0, pos / jnp.where(total > 0, total, 1.0), 1.0)


def bapo_clip_bounds(
    ratio: ArrayLike,
    advantages: ArrayLike,
    mask: ArrayLike,
    rho0: float = 0.5,
    low_range: tuple[float, float] = (0.6, 0.9),
    high_range: tuple[float, float] = (1.2, 3.0),
    low_step: float = 0.02,
    high_step: float = 0.05,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Search (c_low, c_high): step both up (each capped at its maximum) until rho >= rho0.

    Returns ``(c_low, c_high, rho)`` as float32 scalars; no gradient flows through them.

    Args:
        ratio: [B, T] float, the importance ratio r_t (its gradient is stopped).
        advantages: [B, T] float, the advantage A_t.
        mask: [B, T] validity mask (> 0 counts).
        rho0: target share of the positive tokens' mass, in (0, 1].
        low_range: (a_low, b_low), start and maximum of c_low.
        high_range: (a_high, b_high), start and maximum of c_high.
        low_step: increment of c_low per iteration, > 0.
        high_step: increment of c_high per iteration, > 0.

    Returns:
        ``(c_low, c_high, rho)``: float32 scalars, the bounds found and rho at them.
    """
    ratio = jax.lax.stop_gradient(ratio)
    max_iters = math.ceil(
        max((low_range[1] - low_range[0]) / low_step, (high_range[1] - high_range[0]) / high_step)
    )

    def rho_of(bounds):
        return positive_contribution(ratio, advantages, mask, bounds[0], bounds[1])

    def cond(state):
        i, c_low, c_high = state
        below_target = rho_of((c_low, c_high)) < rho0
        can_move = (c_low < low_range[1]) | (c_high < high_range[1])
        return (i < max_iters) & below_target & can_move

    def body(state):
        i, c_low, c_high = state
        c_low = jnp.minimum(c_low + low_step, low_range[1])
        c_high = jnp.minimum(c_high + high_step, high_range[1])
        return i + 1, c_low, c_high

    init = (jnp.int32(0), jnp.float32(low_range[0]), jnp.float32(high_range[0]))
    _, c_low, c_high = jax.lax.while_loop(cond, body, init)
    return c_low, c_high, rho_of((c_low, c_high))


@register(
    "bapo",
    paper="BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs via Balanced Policy "
    "Optimization with Adaptive Clipping",
    kind="intervention",
)
def bapo(
    rho0: float = 0.5,
    low_range: tuple[float, float] = (0.6, 0.9),
    high_range: tuple[float, float] = (1.2, 3.0),
    low_step: float = 0.02,
    high_step: float = 0.05,
    dual_clip: float | None = 3.0,
    coef: float = 1.0,
) -> Term:
    """BAPO: the clipped surrogate with per-batch adaptive ratio bounds [c_low, c_high].

    Formula:
        (c_low, c_high) = smallest steps up from (a_low, a_high) with rho(c_low, c_high) >= rho0
                          (or the maxima (b_low, b_high)); rho as in the module docstring
        l_t = max(-A_t r_t, -A_t clip(r_t, c_low, c_high)),  dual clip min(l_t, -c A_t) if A_t<0

    Paper: BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs via Balanced Policy
    Optimization with Adaptive Clipping (Xi et al., 2025).

    Defaults: rho0 = 0.5, c_low in [0.6, 0.9], c_high in [1.2, 3.0] (the authors' released
    settings); dual_clip c = 3 as in :func:`~entropix.losses.objectives.ppo_clip`. Our
    choices: both bounds move together each iteration, by low_step = 0.02 and
    high_step = 0.05. Metrics: ``c_low``, ``c_high``, ``positive_contribution``.

    Args:
        rho0: target share of the positive tokens' mass, in (0, 1].
        low_range: (a_low, b_low), start and maximum of c_low, 0 < a_low <= b_low < 1.
        high_range: (a_high, b_high), start and maximum of c_high, 1 < a_high <= b_high.
        low_step: increment of c_low per search iteration, > 0.
        high_step: increment of c_high per search iteration, > 0.
        dual_clip: dual-clip constant c > 1, or None for no dual clip.
        coef: weight of the term in the composed loss.

    Returns:
        A per-token :class:`Term` named ``"bapo"`` (metrics also ``clip_fraction``).
    """
    check_positive(rho0, "rho0")
    check_positive(low_step, "low_step")
    check_positive(high_step, "high_step")
    if not (0 < low_range[0] <= low_range[1] < 1 < high_range[0] <= high_range[1]):
        raise ValueError(
            "need 0 < low_range[0] <= low_range[1] < 1 < high_range[0] <= high_range[1]; got "
            f"low_range={low_range}, high_range={high_range}"
        )

    def fn(batch: PolicyBatch, mask):
        ratio = policy_ratio(batch)
        c_low, c_high, rho = bapo_clip_bounds(
            ratio, batch.advantages, mask, rho0, low_range, high_range, low_step, high_step
        )
        loss, is_clipped, _ = clipped_surrogate(
            ratio, batch.advantages, 1.0 - c_low, c_high - 1.0, dual_clip
        )
        metrics = {
            "c_low": c_low,
            "c_high": c_high,
            "positive_contribution": rho,
            "clip_fraction": masked_mean(is_clipped.astype(jnp.float32), mask),
        }
        return loss, metrics

    return Term("bapo", fn, coef=coef)
