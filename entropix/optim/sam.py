"""Sharpness-aware minimisation (SAM) and SAR's SAM with model recovery, as optax transforms.

Both are ``optax.GradientTransformationExtraArgs`` whose ``update`` needs one extra keyword,
``value_and_grad_fn(params) -> (loss, grads)`` on the current batch; the train step in
``entropix.train`` always passes it. ``optax.contrib.sam`` (opaque mode) computes the same
update, but its ``grad_fn`` returns gradients only, and SAR's recovery rule needs the loss at
the perturbed point, so the one-step SAM is written here (and tested against optax's).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropix.losses.tta import sar_reset_check
from entropix.validation import check_positive


class SAMState(NamedTuple):
    """Inner optimizer state; ``diagnostics["sam_perturbed_loss"]`` is L(w + e) of the last step."""

    inner: optax.OptState
    diagnostics: dict


def _require(value_and_grad_fn, name: str):
    if value_and_grad_fn is None:
        raise ValueError(
            f"{name} needs update(..., value_and_grad_fn=fn) with fn(params) -> (loss, grads); "
            "entropix.train.make_train_step passes it, a hand-written loop must too"
        )


def sam(
    optimizer: optax.GradientTransformation, rho: float = 0.05, eps: float = 1e-12
) -> optax.GradientTransformationExtraArgs:
    """SAM: take the gradient at the worst-case point of a rho-ball, then step with it.

    Formula:
        g = grad L(w)                        (the incoming updates)
        e = rho * g / (||g||_2 + eps)        (first-order maximiser of L(w + e), ||e|| <= rho)
        g_sam = grad L(w + e)
        update = optimizer(g_sam)            (applied at w, not at w + e)

    Paper: "Sharpness-Aware Minimization for Efficiently Improving Generalization" (Foret et
    al., ICLR 2021).

    Defaults: rho = 0.05 (the paper's most common value, also SAR's). ``update`` needs
    ``value_and_grad_fn(params) -> (loss, grads)``.

    Args:
        optimizer: the base transform applied to g_sam (e.g. ``optax.sgd``).
        rho: radius of the perturbation ball, > 0; default 0.05.
        eps: added to ||g|| to avoid dividing by 0; default 1e-12.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`SAMState`;
        its ``update(updates, state, params, value_and_grad_fn=...)`` returns the base
        optimizer's updates for g_sam.
    """
    check_positive(rho, "rho")
    optimizer = optax.with_extra_args_support(optimizer)

    def init_fn(params):
        return SAMState(
            inner=optimizer.init(params),
            diagnostics={"sam_perturbed_loss": jnp.zeros((), jnp.float32)},
        )

    def update_fn(updates, state, params=None, *, value_and_grad_fn=None, **extra):
        _require(value_and_grad_fn, "sam")
        if params is None:
            raise ValueError("sam needs params in update(updates, state, params, ...)")
        scale = rho / (optax.tree.norm(updates) + eps)
        perturbed = jax.tree.map(lambda w, g: w + (scale * g).astype(w.dtype), params, updates)
        loss, grads = value_and_grad_fn(perturbed)
        new_updates, inner = optimizer.update(grads, state.inner, params, **extra)
        return new_updates, SAMState(
            inner=inner, diagnostics={"sam_perturbed_loss": jnp.asarray(loss, jnp.float32)}
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class SARState(NamedTuple):
    """SAM state, the source parameters to recover, and the loss moving average."""

    sam: SAMState
    initial_params: optax.Params
    diagnostics: dict


def sar_optimizer(
    optimizer: optax.GradientTransformation,
    rho: float = 0.05,
    reset_constant: float = 0.2,
    momentum: float = 0.9,
) -> optax.GradientTransformationExtraArgs:
    """SAR's optimizer: SAM plus model recovery (reset to the source parameters when the
    moving average of the perturbed-point loss collapses).

    Formula:
        update, L2 = SAM step (L2 = the loss at w + e)
        e_k = L2 if no history else momentum * e_{k-1} + (1 - momentum) * L2
        (a non-finite L2 leaves e unchanged)
        if e_k < reset_constant:  w <- w_0, optimizer state <- init, history cleared

    Paper: "Towards Stable Test-Time Adaptation in Dynamic Wild World" (Niu et al., ICLR 2023).

    Defaults: rho 0.05, reset_constant 0.2, momentum 0.9 (the paper's); base optimizer SGD
    with momentum 0.9 (lr 0.00025 for batch 64 on ResNet-50). The moving-average rule is
    ``entropix.losses.sar_reset_check``. ``initial_params`` are the params given to ``init``.
    Diagnostics: ``sar_loss_ema`` (NaN while empty) and ``sar_resets`` (count).

    Args:
        optimizer: the base transform (e.g. ``optax.sgd(0.00025, momentum=0.9)``).
        rho: SAM's radius, > 0; default 0.05.
        reset_constant: recover when the loss moving average falls below this, > 0;
            default 0.2.
        momentum: weight of the old moving average, in [0, 1); default 0.9.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`SARState`;
        its ``update(updates, state, params, value_and_grad_fn=...)`` returns SAM's updates,
        or on a reset the updates w_0 - w that move the parameters back to the source.
    """
    check_positive(reset_constant, "reset_constant")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1); got {momentum}")
    inner = sam(optimizer, rho)

    def init_fn(params):
        return SARState(
            sam=inner.init(params),
            initial_params=params,
            diagnostics={
                "sar_loss_ema": jnp.asarray(jnp.nan, jnp.float32),
                "sar_resets": jnp.zeros((), jnp.int32),
            },
        )

    def update_fn(updates, state, params=None, *, value_and_grad_fn=None, **extra):
        updates, sam_state = inner.update(
            updates, state.sam, params, value_and_grad_fn=value_and_grad_fn, **extra
        )
        loss2 = sam_state.diagnostics["sam_perturbed_loss"]
        old_ema = state.diagnostics["sar_loss_ema"]
        ema, reset = sar_reset_check(old_ema, loss2, momentum, reset_constant)
        ema = jnp.where(jnp.isfinite(loss2), ema, old_ema)
        reset = reset & jnp.isfinite(loss2)
        pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(reset, x, y), a, b)
        back_to_source = jax.tree.map(lambda w0, w: w0 - w, state.initial_params, params)
        fresh = inner.init(state.initial_params)
        diagnostics = {
            "sar_loss_ema": jnp.where(reset, jnp.nan, ema),
            "sar_resets": state.diagnostics["sar_resets"] + reset.astype(jnp.int32),
        }
        new_sam = SAMState(
            inner=pick(fresh.inner, sam_state.inner), diagnostics=sam_state.diagnostics
        )
        return pick(back_to_source, updates), SARState(
            sam=new_sam, initial_params=state.initial_params, diagnostics=diagnostics
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
