"""EATA: entropy minimisation on reliable, non-redundant samples plus a Fisher anti-forgetting term.

Paper: "Efficient Test-Time Model Adaptation without Forgetting" (Niu et al., ICML 2022).
Inputs are classifier logits ``[B, C]``. The redundancy filter needs the moving average of the
model's mean prediction, which the caller threads from step to step (start from zeros).
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from entropix.entropy import log_softmax
from entropix.losses.registry import register
from entropix.losses.tta import check_logits, selected_mean
from entropix.validation import check_positive, check_shape


def _cosine(a, b, eps=1e-8):
    """Cosine similarity of each row of ``a`` [B, C] with the vector ``b`` [C]."""
    dot = a @ b
    return dot / jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b), eps)


@register(
    "eata",
    paper="Efficient Test-Time Model Adaptation without Forgetting",
    kind="tta",
)
def eata(
    margin_factor: float = 0.4, redundancy_margin: float = 0.05, momentum: float = 0.9
) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, tuple[dict, jax.Array]]]:
    """EATA: reweighted entropy minimisation on reliable (low-entropy), non-redundant samples.

    Formula:
        p_b = softmax(z_b),  H_b = -sum_c p_bc log p_bc,  E0 = margin_factor * ln C
        reliable_b  = H_b < E0
        redundant_b = m != 0 and cos(p_b, m) >= eps        (m: moving average of mean p)
        S           = reliable and not redundant
        w_b         = 1 / exp(sg(H_b) - E0)               (stop-gradient on the weight)
        L           = (1/|S|) sum_{b in S} w_b H_b         (0 when S is empty)
        m' = mean_{b in S} p_b                   if m == 0 (first step)
        m' = momentum * m + (1 - momentum) * mean_{b in S} p_b   otherwise;  m' = m if S empty
      Anti-forgetting term, added by the caller (:func:`fisher_penalty`):
        R = beta * sum_i F_i (theta_i - theta0_i)^2

    Paper: "Efficient Test-Time Model Adaptation without Forgetting" (Niu et al., ICML 2022).

    Defaults: E0 = 0.4 ln C, eps = 0.05, momentum 0.9 (the authors' moving-average update,
    m' = 0.9 m + 0.1 mean p), Fisher beta = 2000 estimated on 2000 test samples with pseudo labels.
    ``m`` and ``p`` are treated as constants (no gradient through the filter).

    Returns ``loss_fn(logits[B, C], prob_ema[C]) -> (loss, (metrics, new_prob_ema))``, the
    ``has_aux`` form of ``jax.value_and_grad``. Pass ``jnp.zeros(C)`` as the first ``prob_ema``.

    Args:
        margin_factor: > 0, the reliability margin E0 as a fraction of ln C.
        redundancy_margin: > 0, the cosine-similarity threshold eps of the redundancy filter.
        momentum: moving-average momentum of the mean prediction, in [0, 1).

    Returns:
        ``loss_fn(logits, prob_ema)``: logits [B, C] float and the float32 [C] moving average
        -> (float32 scalar loss, (metrics dict with ``entropy``, ``reliable_fraction``,
        ``selected_fraction``; the new float32 [C] moving average)).
    """
    check_positive(margin_factor, "margin_factor")
    check_positive(redundancy_margin, "redundancy_margin")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1); got {momentum}")

    def loss_fn(logits, prob_ema):
        num_classes = check_logits(logits)
        check_shape(prob_ema, "prob_ema", (num_classes,))
        logp = log_softmax(logits)
        probs = jnp.exp(logp)
        entropy = -jnp.sum(probs * logp, axis=-1)
        e0 = margin_factor * math.log(num_classes)
        p_const = jax.lax.stop_gradient(probs)
        m = jax.lax.stop_gradient(jnp.asarray(prob_ema, jnp.float32))
        has_history = jnp.any(m != 0)
        reliable = entropy < e0
        redundant = has_history & (_cosine(p_const, m) >= redundancy_margin)
        selected = reliable & ~redundant
        weights = jnp.exp(e0 - jax.lax.stop_gradient(entropy))
        loss = selected_mean(weights * entropy, selected)

        count = jnp.sum(selected)
        batch_mean = jnp.sum(p_const * selected[:, None], axis=0) / jnp.maximum(count, 1)
        updated = jnp.where(has_history, momentum * m + (1.0 - momentum) * batch_mean, batch_mean)
        new_ema = jnp.where(count > 0, updated, m)
        metrics = {
            "entropy": jnp.mean(entropy),
            "reliable_fraction": jnp.mean(reliable.astype(jnp.float32)),
            "selected_fraction": jnp.mean(selected.astype(jnp.float32)),
        }
        return loss, (metrics, new_ema)

    return loss_fn


def fisher_diagonal(grads: Any) -> Any:
    """Diagonal Fisher estimate F = mean_n g_n^2 from gradient samples stacked on axis 0.

    ``grads`` is a pytree whose leaves are ``[N, ...]``: N gradients of the cross-entropy with
    the model's own pseudo labels (EATA uses per-batch gradients over 2000 test samples).
    Returns a pytree of the parameters' shapes.

    Args:
        grads: pytree of float arrays ``[N, ...]``, N gradient samples per parameter.

    Returns:
        Pytree of the same structure with float32 leaves ``[...]`` (axis 0 averaged away).
    """
    return jax.tree.map(lambda g: jnp.mean(jnp.square(jnp.asarray(g, jnp.float32)), axis=0), grads)


def fisher_penalty(params: Any, anchor_params: Any, fisher: Any, beta: float = 2000.0) -> jax.Array:
    """EATA anti-forgetting regulariser beta * sum_i F_i (theta_i - theta0_i)^2 over a pytree.

    ``params``, ``anchor_params`` (the source model theta0) and ``fisher`` (from
    :func:`fisher_diagonal`) must share one tree structure. Paper default beta = 2000.

    Args:
        params: pytree of the current parameters theta.
        anchor_params: pytree of the source parameters theta0, same structure and shapes.
        fisher: pytree of the diagonal Fisher F, same structure and shapes.
        beta: the regulariser's weight.

    Returns:
        The float32 scalar penalty.
    """
    structure = jax.tree.structure(params)
    for name, tree in (("anchor_params", anchor_params), ("fisher", fisher)):
        if jax.tree.structure(tree) != structure:
            raise ValueError(f"{name} must have the same pytree structure as params")
    terms = jax.tree.map(
        lambda p, p0, f: jnp.sum(f * jnp.square(jnp.asarray(p, jnp.float32) - p0)),
        params,
        anchor_params,
        fisher,
    )
    return beta * sum(jax.tree.leaves(terms))
