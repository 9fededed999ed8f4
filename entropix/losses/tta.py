"""Test-time adaptation by entropy minimisation: Tent and SAR's reliable-entropy loss.

Inputs are classifier logits ``[B, C]`` (B test samples, C classes). Every loss returns
``(loss, metrics)`` with ``metrics`` a dict of scalars, so ``jax.value_and_grad(fn, has_aux=True)``
applies directly. Entropies are computed in float32 (``entropix.entropy.shannon_entropy``).
The EATA and DeYO variants live in ``eata.py`` and ``deyo.py``; Tsallis variants in
``tsallis_tta.py``.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import shannon_entropy
from entropix.losses.registry import register
from entropix.validation import check_floating, check_positive, check_rank


def check_logits(logits: ArrayLike, name: str = "logits") -> int:
    """Validate classifier logits [B, C] (floating, rank 2, C >= 2); return C.

    Args:
        logits: the array to check, expected [B, C] floating.
        name: how the error messages name the array.

    Returns:
        The number of classes C.
    """
    check_floating(logits, name)
    check_rank(logits, name, 2)
    num_classes = logits.shape[-1]
    if num_classes < 2:
        raise ValueError(f"{name} must have at least 2 classes on its last axis; got {num_classes}")
    return num_classes


def selected_mean(values: ArrayLike, selected: ArrayLike) -> jax.Array:
    """Mean of ``values`` over ``selected`` entries (bool); 0 when nothing is selected.

    Args:
        values: float array, e.g. per-sample entropies [B].
        selected: bool array of the same shape, the entries averaged.

    Returns:
        The float scalar mean (0 when nothing is selected).
    """
    w = selected.astype(jnp.float32)
    count = jnp.sum(w)
    return jnp.where(count > 0, jnp.sum(values * w) / jnp.maximum(count, 1.0), 0.0)


@register(
    "tent",
    paper="Tent: Fully Test-time Adaptation by Entropy Minimization",
    kind="tta",
)
def tent(temperature: float = 1.0) -> Callable[[jax.Array], tuple[jax.Array, dict]]:
    """Tent: minimise the mean Shannon entropy of the model's test-batch predictions.

    Formula:
        L = (1/B) sum_b H(softmax(z_b / T)),   H(p) = -sum_c p_c log p_c

    Paper: "Tent: Fully Test-time Adaptation by Entropy Minimization" (Wang et al., ICLR 2021).

    Defaults: T = 1. The paper updates only the affine scale/shift of the normalisation layers
    (BatchNorm with test-batch statistics), one SGD step (lr 0.00025, momentum 0.9) per batch
    on ImageNet; which parameters to adapt is the caller's choice (differentiate w.r.t. them).

    Returns ``loss_fn(logits[B, C]) -> (loss, {"entropy"})``.

    Args:
        temperature: > 0, the softmax temperature T.

    Returns:
        ``loss_fn(logits)``: logits [B, C] float -> (float32 scalar loss, ``{"entropy"}``).
    """
    check_positive(temperature, "temperature")

    def loss_fn(logits):
        check_logits(logits)
        loss = jnp.mean(shannon_entropy(logits, temperature))
        return loss, {"entropy": loss}

    return loss_fn


@register(
    "sar",
    paper="Towards Stable Test-Time Adaptation in Dynamic Wild World",
    kind="tta",
)
def sar(margin_factor: float = 0.4) -> Callable[[jax.Array], tuple[jax.Array, dict]]:
    """SAR reliable entropy: entropy minimisation over low-entropy samples only.

    Formula:
        E0 = margin_factor * ln C
        S  = {b : H(p_b) < E0}
        L  = (1/|S|) sum_{b in S} H(p_b)            (0 when S is empty)

    Paper: "Towards Stable Test-Time Adaptation in Dynamic Wild World" (Niu et al., ICLR 2023).

    Defaults: E0 = 0.4 ln C. SAR minimises this loss with sharpness-aware minimisation (the SAM
    transform of ``entropix.optim``, rho = 0.05) and applies the same filter at the perturbed
    point; its model-recovery rule is :func:`sar_reset_check`.

    Returns ``loss_fn(logits[B, C]) -> (loss, {"entropy", "selected_fraction"})``.

    Args:
        margin_factor: > 0, the entropy margin E0 as a fraction of ln C.

    Returns:
        ``loss_fn(logits)``: logits [B, C] float -> (float32 scalar loss, metrics dict with
        ``entropy`` (mean over all samples) and ``selected_fraction``).
    """
    check_positive(margin_factor, "margin_factor")

    def loss_fn(logits):
        num_classes = check_logits(logits)
        entropy = shannon_entropy(logits)
        selected = entropy < margin_factor * math.log(num_classes)
        loss = selected_mean(entropy, selected)
        metrics = {
            "entropy": jnp.mean(entropy),
            "selected_fraction": jnp.mean(selected.astype(jnp.float32)),
        }
        return loss, metrics

    return loss_fn


def sar_reset_check(
    loss_ema: ArrayLike, loss: ArrayLike, momentum: float = 0.9, reset_constant: float = 0.2
) -> tuple[jax.Array, jax.Array]:
    """SAR model recovery: update the loss moving average and flag a reset to the source model.

    Formula:
        e' = loss                             if e is NaN (no history yet)
        e' = momentum * e + (1 - momentum) * loss   otherwise
        reset = e' < reset_constant

    Paper: "Towards Stable Test-Time Adaptation in Dynamic Wild World" (defaults momentum 0.9,
    reset constant 0.2, applied to the loss after the SAM step). Start from ``jnp.nan``. After a
    reset the caller restores the source parameters and sets the average back to NaN.

    Returns ``(new_ema, reset)`` with ``reset`` a bool scalar.

    Args:
        loss_ema: the loss moving average e (scalar; NaN when there is no history yet).
        loss: this step's loss (scalar).
        momentum: moving-average momentum in [0, 1).
        reset_constant: the average below which the model is reset.

    Returns:
        ``(new_ema, reset)``: the float32 scalar average e' and the bool scalar reset flag.
    """
    loss = jnp.asarray(loss, jnp.float32)
    loss_ema = jnp.asarray(loss_ema, jnp.float32)
    new = jnp.where(jnp.isnan(loss_ema), loss, momentum * loss_ema + (1.0 - momentum) * loss)
    return new, new < reset_constant
