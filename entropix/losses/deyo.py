"""DeYO: entropy minimisation filtered and weighted by the pseudo-label probability difference.

Paper: "Entropy is not Enough for Test-Time Adaptation: From the Perspective of Disentangled
Factors" (Lee et al., ICLR 2024). PLPD compares the model's confidence in its own pseudo label
before and after an object-destroying transformation; :func:`patch_shuffle` is that transform.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import log_softmax
from entropix.losses.registry import register
from entropix.losses.tta import check_logits, selected_mean
from entropix.validation import check_floating, check_positive, check_rank, check_shape


def patch_shuffle(key: jax.Array, images: ArrayLike, patches: int = 4) -> jax.Array:
    """Cut each image into a ``patches x patches`` grid and shuffle the tiles, per image.

    ``images`` is ``[B, H, W, C]``. When H or W is not a multiple of ``patches`` the image is
    resized (bilinear) down to the nearest multiple, shuffled, and resized back, as DeYO does;
    otherwise the output is an exact rearrangement of the input pixels. Pure: all randomness
    comes from ``key``.

    Args:
        key: PRNG key; each image gets its own permutation from it.
        images: [B, H, W, C] float images, H and W at least ``patches``.
        patches: grid side, a positive int (``patches**2`` tiles per image).

    Returns:
        The shuffled images, [B, H, W, C] like ``images``.
    """
    check_floating(images, "images")
    check_rank(images, "images", 4)
    if not isinstance(patches, int) or patches < 1:
        raise ValueError(f"patches must be a positive int; got {patches!r}")
    b, h, w, c = images.shape
    if h < patches or w < patches:
        raise ValueError(f"images of size {h}x{w} cannot be cut into {patches}x{patches} patches")
    ph, pw = h // patches, w // patches
    resized = (ph * patches, pw * patches) != (h, w)
    x = (
        jax.image.resize(images, (b, ph * patches, pw * patches, c), "bilinear")
        if resized
        else images
    )
    tiles = x.reshape(b, patches, ph, patches, pw, c).transpose(0, 1, 3, 2, 4, 5)
    tiles = tiles.reshape(b, patches * patches, ph, pw, c)
    perms = jax.vmap(lambda k: jax.random.permutation(k, patches * patches))(
        jax.random.split(key, b)
    )
    tiles = jnp.take_along_axis(tiles, perms[:, :, None, None, None], axis=1)
    out = tiles.reshape(b, patches, patches, ph, pw, c).transpose(0, 1, 3, 2, 4, 5)
    out = out.reshape(b, ph * patches, pw * patches, c)
    return jax.image.resize(out, images.shape, "bilinear") if resized else out


@register(
    "deyo",
    paper="Entropy is not Enough for Test-Time Adaptation: From the Perspective of Disentangled "
    "Factors",
    kind="tta",
)
def deyo(
    margin_factor: float = 0.5,
    weight_margin_factor: float = 0.4,
    plpd_threshold: float = 0.2,
    reweight_entropy: bool = True,
    reweight_plpd: bool = True,
) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, dict]]:
    """DeYO: entropy minimisation on samples that are confident and whose confidence rests on shape.

    Formula:
        p = softmax(z),  p' = softmax(z'),  z' = logits of the patch-shuffled input (constant)
        yhat_b = argmax_c p_bc,   PLPD_b = p_b[yhat_b] - p'_b[yhat_b]
        H_b = -sum_c p_bc log p_bc
        S = {b : H_b < margin_factor ln C  and  PLPD_b > plpd_threshold}
        w_b = [reweight_entropy] exp(-(sg(H_b) - weight_margin_factor ln C))
            + [reweight_plpd]    exp(sg(PLPD_b))                 (w_b = 1 when both are off)
        L = (1/|S|) sum_{b in S} w_b H_b                         (0 when S is empty)

    Paper: "Entropy is not Enough for Test-Time Adaptation: From the Perspective of Disentangled
    Factors" (Lee et al., ICLR 2024).

    Defaults: tau_Ent = 0.5 ln C, Ent0 = 0.4 ln C, tau_PLPD = 0.2 (the defaults of the
    authors' code, set for ImageNet-C; tune tau_PLPD per shift), both reweightings on, patch
    shuffle with a 4x4 grid (:func:`patch_shuffle`). The weights and PLPD carry no gradient;
    ``shuffled_logits`` are treated as constants (DeYO computes them without gradient).

    Returns ``loss_fn(logits[B, C], shuffled_logits[B, C]) -> (loss, metrics)``.

    Args:
        margin_factor: > 0, the entropy filter tau_Ent as a fraction of ln C.
        weight_margin_factor: > 0, Ent0 of the entropy reweighting as a fraction of ln C.
        plpd_threshold: tau_PLPD, the minimum PLPD of a selected sample (a probability
            difference in [-1, 1]).
        reweight_entropy: whether w_b includes the entropy weight.
        reweight_plpd: whether w_b includes the PLPD weight.

    Returns:
        ``loss_fn(logits, shuffled_logits)``: two [B, C] float logits -> (float32 scalar loss,
        metrics dict with ``entropy``, ``plpd``, ``confident_fraction``,
        ``selected_fraction``).
    """
    for value, name in (
        (margin_factor, "margin_factor"),
        (weight_margin_factor, "weight_margin_factor"),
    ):
        check_positive(value, name)

    def loss_fn(logits, shuffled_logits):
        num_classes = check_logits(logits)
        check_floating(shuffled_logits, "shuffled_logits")
        check_shape(shuffled_logits, "shuffled_logits", logits.shape)
        logp = log_softmax(logits)
        probs = jnp.exp(logp)
        entropy = -jnp.sum(probs * logp, axis=-1)
        p_shuffled = jnp.exp(log_softmax(jax.lax.stop_gradient(shuffled_logits)))
        p_const = jax.lax.stop_gradient(probs)
        label = jnp.argmax(p_const, axis=-1)
        plpd = jnp.take_along_axis(p_const - p_shuffled, label[:, None], axis=-1)[:, 0]
        log_c = math.log(num_classes)
        confident = entropy < margin_factor * log_c
        selected = confident & (plpd > plpd_threshold)
        h_const = jax.lax.stop_gradient(entropy)
        weights = jnp.zeros_like(entropy)
        if reweight_entropy:
            weights = weights + jnp.exp(weight_margin_factor * log_c - h_const)
        if reweight_plpd:
            weights = weights + jnp.exp(plpd)
        if not (reweight_entropy or reweight_plpd):
            weights = jnp.ones_like(entropy)
        loss = selected_mean(weights * entropy, selected)
        metrics = {
            "entropy": jnp.mean(entropy),
            "plpd": jnp.mean(plpd),
            "confident_fraction": jnp.mean(confident.astype(jnp.float32)),
            "selected_fraction": jnp.mean(selected.astype(jnp.float32)),
        }
        return loss, metrics

    return loss_fn
