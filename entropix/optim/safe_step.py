"""The "ghosts of softmax" safe step: cap an update's length at the softmax Taylor radius."""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropix.validation import check_positive


class SafeStepState(NamedTuple):
    """Diagnostics of the last step: ``safe_rho`` (rho_a), ``safe_ratio`` (tau / rho_a before
    scaling) and ``safe_scale`` (the factor applied to the update, <= 1)."""

    diagnostics: dict


def logit_spread(
    logits_fn: Callable[[Any], jax.Array | tuple[jax.Array, jax.Array]],
    params: optax.Params,
    direction: optax.Params,
) -> jax.Array:
    """Delta_a = max over positions of (max_k a_k - min_k a_k), a = J v by one ``jax.jvp``.

    Args:
        logits_fn: ``logits_fn(params)`` returns logits [..., V] or ``(logits, mask)`` with
            ``mask`` [...] marking the positions that count (padding excluded).
        params: the parameter pytree the logits are linearised at.
        direction: the tangent v, a pytree like ``params`` (each leaf in its dtype).

    Returns:
        float32 scalar Delta_a (0 when no position counts).
    """

    def split(p):
        out = logits_fn(p)
        logits, mask = out if isinstance(out, tuple) else (out, None)
        return jnp.asarray(logits, jnp.float32), mask

    _, a, mask = jax.jvp(split, (params,), (direction,), has_aux=True)
    spread = jnp.max(a, axis=-1) - jnp.min(a, axis=-1)
    if mask is not None:
        spread = jnp.where(jnp.asarray(mask).astype(bool), spread, 0.0)
    return jnp.max(spread)


def safe_step(max_ratio: float = 1.0) -> optax.GradientTransformationExtraArgs:
    """Scale the proposed update u so its length tau = ||u|| stays within the radius rho_a.

    Formula (logits linearised along the unit direction v = u / ||u||):
        a_k = grad z_k . v                  (one Jacobian-vector product of the logits)
        Delta_a = max_positions (max_k a_k - min_k a_k)
        rho_a = pi / Delta_a                (lower bound on the Taylor convergence radius of
                                             the cross-entropy along v; zeros of sum_k exp(z_k))
        r = tau / rho_a;   u <- u * min(1, max_ratio / r)

    Paper: "Ghosts of Softmax: Complex Singularities That Limit Safe Step Sizes in
    Cross-Entropy" (Sao, 2026).

    Defaults: max_ratio 1 (the paper's controller enforces tau <= rho_a; no tested model failed
    below r = 1). Put it last in an ``optax.chain`` so it sees the final update. ``update``
    needs ``logits_fn(params) -> logits`` or ``(logits, mask)`` on the current batch (the train
    step passes it when given a ``logits_fn``).

    Args:
        max_ratio: the largest allowed r = tau / rho_a, > 0; default 1.0.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`SafeStepState`;
        its ``update(updates, state, params, logits_fn=...)`` returns the scaled updates.
    """
    check_positive(max_ratio, "max_ratio")

    def init_fn(params):
        del params
        scalar = lambda value: jnp.full((), value, jnp.float32)
        return SafeStepState(
            diagnostics={
                "safe_rho": scalar(0.0),
                "safe_ratio": scalar(0.0),
                "safe_scale": scalar(1.0),
            }
        )

    def update_fn(updates, state, params=None, *, logits_fn=None, **extra):
        del state, extra
        if logits_fn is None or params is None:
            raise ValueError(
                "safe_step needs params and update(..., logits_fn=fn) with fn(params) -> logits; "
                "give make_train_step a logits_fn"
            )
        tau = optax.tree.norm(updates).astype(jnp.float32)
        inv = jnp.where(tau > 0, 1.0 / jnp.where(tau > 0, tau, 1.0), 0.0)
        direction = jax.tree.map(lambda u, p: (u * inv).astype(p.dtype), updates, params)
        spread = logit_spread(logits_fn, params, direction)
        rho = jnp.where(spread > 0, math.pi / jnp.where(spread > 0, spread, 1.0), jnp.inf)
        ratio = tau * spread / math.pi
        scale = jnp.where(ratio > max_ratio, max_ratio / jnp.where(ratio > 0, ratio, 1.0), 1.0)
        scaled = jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates)
        diagnostics = {"safe_rho": rho, "safe_ratio": ratio, "safe_scale": scale}
        return scaled, SafeStepState(diagnostics=diagnostics)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
