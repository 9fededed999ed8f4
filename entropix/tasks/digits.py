"""Corrupted sklearn-digits streams for test-time adaptation.

Images are the 8x8 sklearn digits scaled to [0, 1], shaped ``[N, 8, 8, 1]``. Four corruptions
in the style of ImageNet-C ("Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", Hendrycks & Dietterich 2019), each with severities 1-5:

* ``gaussian_noise``  x + N(0, sigma^2), sigma in (0.08, 0.12, 0.18, 0.26, 0.38)
* ``blur``            Gaussian blur, sigma (pixels) in (0.4, 0.6, 0.8, 1.0, 1.3)
* ``contrast``        (x - mean(x)) * c + mean(x), c in (0.4, 0.3, 0.2, 0.1, 0.05)
* ``impulse``         salt-and-pepper with probability p in (0.03, 0.06, 0.09, 0.17, 0.27)

All results are clipped to [0, 1]. Randomness comes from a seeded ``numpy.random.Generator``.
A test stream (:func:`corrupted_stream`) is the test split cycled as many times as a run of
``steps`` batches needs, with fresh corruption noise and a fresh order each cycle, in random or
label-sorted order (the online label-shift setting of SAR, "Towards Stable Test-Time Adaptation
in Dynamic Wild World"), at any batch size (1 included), with one corruption or a mixture.
"""

from collections.abc import Sequence

import numpy as np

from entropix.validation import check_choice

SEVERITY = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "blur": (0.4, 0.6, 0.8, 1.0, 1.3),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "impulse": (0.03, 0.06, 0.09, 0.17, 0.27),
}
CORRUPTIONS = tuple(SEVERITY)


def load_digits_split(
    test_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): images float32 [N, 8, 8, 1] in [0, 1], int32 labels.

    Args:
        test_fraction: the share of the 1797 images held out for the test split, in [0, 1].
        seed: seeds the permutation that splits them.

    Returns:
        ``(x_train [N_train, 8, 8, 1], y_train [N_train], x_test [N_test, 8, 8, 1],
        y_test [N_test])`` with ``N_test = round(test_fraction * 1797)``; labels in 0-9.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    out = x
    for axis in (1, 2):  # separable convolution with edge padding
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        size = out.shape[axis]
        out = sum(
            w * np.take(padded, np.arange(i, i + size), axis=axis) for i, w in enumerate(kernel)
        )
    return out


def corrupt(x: np.ndarray, kind: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Apply corruption ``kind`` at ``severity`` (1-5) to images ``[N, H, W, C]`` in [0, 1].

    Args:
        x: images ``[N, H, W, C]`` in [0, 1].
        kind: one of :data:`CORRUPTIONS`.
        severity: 1 (mildest) to 5; picks the level in :data:`SEVERITY`.
        rng: the noise source (gaussian_noise, impulse; advanced in place).

    Returns:
        float32 ``[N, H, W, C]`` corrupted images clipped to [0, 1].

    Raises:
        ValueError: an unknown ``kind`` or a severity outside 1-5.
    """
    check_choice(kind, "corruption", CORRUPTIONS)
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1..5; got {severity}")
    level = SEVERITY[kind][severity - 1]
    x = np.asarray(x, np.float32)
    if kind == "gaussian_noise":
        out = x + rng.normal(0.0, level, size=x.shape)
    elif kind == "blur":
        out = _blur(x, level)
    elif kind == "contrast":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        out = (x - mean) * level + mean
    else:
        u = rng.random(x.shape)
        out = np.where(u < level / 2, 0.0, np.where(u > 1 - level / 2, 1.0, x))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


ORDERS = ("random", "label-sorted")


def corrupted_stream(
    x: np.ndarray,
    y: np.ndarray,
    corruptions: Sequence[tuple[str, int]],
    *,
    batch_size: int,
    steps: int,
    order: str = "random",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A test stream of ``steps`` batches: the split cycled, with fresh corruption noise per cycle.

    Cycle c draws from ``default_rng([seed, c])``: every image of ``x`` is corrupted once by
    each ``(kind, severity)`` of ``corruptions`` (several give the mixed-shift stream: the union
    of the corrupted copies, as SAR mixes the ImageNet-C corruptions), then the cycle is put in
    ``order``: ``random`` (a permutation) or ``label-sorted`` (a random permutation, then a
    stable sort by label: classes in turn, shuffled within each class). Cycles are concatenated
    and the first ``steps * batch_size`` images kept, so every batch is full. Blur and contrast
    are deterministic; their cycles differ only in order.

    Args:
        x: the test images ``[N, H, W, C]`` in [0, 1].
        y: their labels ``[N]``.
        corruptions: one or more ``(kind, severity)`` pairs (see :func:`corrupt`).
        batch_size: images per batch (>= 1).
        steps: batches in the stream (>= 1).
        order: ``"random"`` or ``"label-sorted"`` (:data:`ORDERS`).
        seed: seeds each cycle's noise and order.

    Returns:
        ``(xs [steps, batch_size, *x.shape[1:]], ys [steps, batch_size])``: float32 images
        and the labels.

    Raises:
        ValueError: a bad ``order``, ``batch_size`` or ``steps``, no corruptions, or ``x`` and
            ``y`` of different (or zero) length.
    """
    check_choice(order, "order", ORDERS)
    for value, name in ((batch_size, "batch_size"), (steps, "steps")):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if not corruptions:
        raise ValueError("corruptions must name at least one (kind, severity)")
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"x and y must hold the same number (> 0) of images: {len(x)}, {len(y)}")
    total = steps * batch_size
    xs, ys, size, cycle = [], [], 0, 0
    while size < total:
        rng = np.random.default_rng([seed, cycle])
        images = np.concatenate([corrupt(x, kind, severity, rng) for kind, severity in corruptions])
        labels = np.tile(np.asarray(y), len(corruptions))
        index = rng.permutation(len(labels))
        if order == "label-sorted":
            index = index[np.argsort(labels[index], kind="stable")]
        xs.append(images[index])
        ys.append(labels[index])
        size += len(index)
        cycle += 1
    xs = np.concatenate(xs)[:total]
    ys = np.concatenate(ys)[:total]
    return xs.reshape(steps, batch_size, *x.shape[1:]), ys.reshape(steps, batch_size)
