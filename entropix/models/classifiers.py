"""Small image classifiers for test-time adaptation, and selection of their "norm affine" params.

* ``MLPClassifier``: flatten -> [Linear -> Norm -> ReLU] x len(hidden) -> Linear.
* ``CNNClassifier``: [Conv3x3 -> Norm -> ReLU -> MaxPool2] x len(channels) -> global average
  pool -> Linear. Inputs are NHWC.
``norm`` is "batch" (BatchNorm; in train mode it normalises with the test batch's statistics, as
Tent does), "group" (GroupNorm) or "layer" (LayerNorm over the features): both batch-independent,
the ResNet-50-GN / ViT-LN cases that SAR recommends for small, label-shifted or mixed batches.
``use_sigma_reparam`` makes every dense layer a ``SigmaReparamLinear``.

Tent ("Tent: Fully Test-Time Adaptation by Entropy Minimization", Wang et al. 2021), EATA and SAR
adapt only the affine scale/shift of the normalisation layers. ``norm_affine_filter(model)`` is an
``nnx`` filter selecting exactly those parameters (use it as ``nnx.state(model, filter)`` or
``nnx.Optimizer(model, tx, wrt=filter)``) and ``norm_affine_mask(model)`` is the same selection
as a bool pytree over ``nnx.state(model, nnx.Param)`` for ``optax.masked``. Both also work on the
decoder (its RMSNorm weights).
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from entropix.models.layers import RMSNorm, linear
from entropix.validation import check_choice, check_min_rank, check_rank

NORMS = ("batch", "group", "layer")
_NORM_TYPES = (nnx.BatchNorm, nnx.GroupNorm, nnx.LayerNorm, nnx.RMSNorm, RMSNorm)


def _norm(kind: str, features: int, num_groups: int, rngs: nnx.Rngs):
    if kind == "batch":
        return nnx.BatchNorm(features, momentum=0.9, rngs=rngs)
    if kind == "layer":
        return nnx.LayerNorm(features, rngs=rngs)
    if features % num_groups:
        raise ValueError(f"GroupNorm: {features} features are not divisible by {num_groups} groups")
    return nnx.GroupNorm(features, num_groups=num_groups, rngs=rngs)


class MLPClassifier(nnx.Module):
    """Multi-layer perceptron classifier with a Batch/Group/LayerNorm after each hidden layer."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (256, 256),
        *,
        norm: str = "batch",
        num_groups: int = 8,
        use_sigma_reparam: bool = False,
        rngs: nnx.Rngs,
    ):
        check_choice(norm, "norm", NORMS)
        sizes = (in_features, *hidden)
        dense = dict(sigma_reparam=use_sigma_reparam, dtype=None, param_dtype=jnp.float32)
        init = nnx.initializers.lecun_normal()
        self.layers = nnx.List(
            [
                linear(a, b, use_bias=True, kernel_init=init, rngs=rngs, **dense)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.norms = nnx.List([_norm(norm, h, num_groups, rngs) for h in hidden])
        self.head = linear(
            sizes[-1], num_classes, use_bias=True, kernel_init=init, rngs=rngs, **dense
        )

    def features(self, x: ArrayLike) -> jax.Array:
        """Penultimate features [B, hidden[-1]].

        Args:
            x: [B, ...] inputs (e.g. [B, H, W, C] images), flattened to [B, in_features].

        Returns:
            [B, hidden[-1]] activations after the last hidden Linear -> Norm -> ReLU.
        """
        check_min_rank(x, "x", 2, "[batch, ...features]")
        x = x.reshape(x.shape[0], -1)
        for layer, norm in zip(self.layers, self.norms, strict=True):
            x = jax.nn.relu(norm(layer(x)))
        return x

    def __call__(self, x):
        return self.head(self.features(x))


class CNNClassifier(nnx.Module):
    """Small convolutional classifier (NHWC input) with a Batch/Group/LayerNorm after each conv."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        *,
        norm: str = "batch",
        num_groups: int = 8,
        use_sigma_reparam: bool = False,
        rngs: nnx.Rngs,
    ):
        check_choice(norm, "norm", NORMS)
        sizes = (in_channels, *channels)
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, kernel_size=(3, 3), padding="SAME", rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.norms = nnx.List([_norm(norm, c, num_groups, rngs) for c in channels])
        self.head = linear(
            sizes[-1],
            num_classes,
            sigma_reparam=use_sigma_reparam,
            dtype=None,
            param_dtype=jnp.float32,
            use_bias=True,
            kernel_init=nnx.initializers.lecun_normal(),
            rngs=rngs,
        )

    def features(self, x: ArrayLike) -> jax.Array:
        """Globally pooled features [B, channels[-1]] of NHWC images.

        Args:
            x: [B, H, W, in_channels] images (NHWC).

        Returns:
            [B, channels[-1]] spatial means of the last conv block's activations.
        """
        check_rank(x, "x (NHWC images)", 4)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = jax.nn.relu(norm(conv(x)))
            x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="SAME")
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, x):
        return self.head(self.features(x))


def norm_affine_paths(model: nnx.Module) -> frozenset[tuple]:
    """Paths of the Params (scale/bias/weight) owned by normalisation modules of ``model``.

    Args:
        model: any ``nnx`` module (a classifier here or the decoder); its Batch/Group/Layer/
            RMSNorm submodules are the normalisation modules.

    Returns:
        The ``nnx`` state paths (tuples of attribute names and indices) of those Params.
    """
    paths = set()
    for path, node in nnx.iter_graph(model):
        if isinstance(node, _NORM_TYPES):
            for sub, _ in nnx.to_flat_state(nnx.state(node, nnx.Param)):
                paths.add((*path, *sub))
    return frozenset(paths)


@dataclasses.dataclass(frozen=True)
class _InPaths:
    """An nnx filter predicate: the variable's path is one of ``paths`` (equal by value, so
    two filters of same-shaped models are the same static argument of a jitted step)."""

    paths: frozenset

    def __call__(self, path, _) -> bool:
        return tuple(path) in self.paths


def norm_affine_filter(model: nnx.Module) -> nnx.All:
    """An ``nnx`` filter selecting exactly the normalisation layers' affine Params.

    Args:
        model: the ``nnx`` module whose norm Params the filter selects (see
            :func:`norm_affine_paths`).

    Returns:
        ``nnx.All(nnx.Param, <path predicate>)``, for ``nnx.state(model, filter)`` or
        ``nnx.Optimizer(model, tx, wrt=filter)``; equal for two same-shaped models.
    """
    return nnx.All(nnx.Param, _InPaths(norm_affine_paths(model)))


def norm_affine_mask(model: nnx.Module) -> nnx.State:
    """Bool pytree over ``nnx.state(model, nnx.Param)``: True for norm affine params.

    Args:
        model: the ``nnx`` module whose Params the mask covers.

    Returns:
        An ``nnx.State`` shaped like ``nnx.state(model, nnx.Param)`` with a bool leaf per Param
        (True for the normalisation layers' affine Params), for ``optax.masked``.
    """
    paths = norm_affine_paths(model)
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return nnx.from_flat_state([(path, path in paths) for path, _ in flat])
