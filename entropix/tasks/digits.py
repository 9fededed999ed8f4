"""Corrupted sklearn-digits streams for test-time adaptation.

Images are the 8x8 sklearn digits scaled to [0, 1], shaped ``[N, 8, 8, 1]``. Four corruptions
in the style of ImageNet-C ("Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", Hendrycks & Dietterich 2019), each with severities 1-5:

* ``gaussian_noise``  x + N(0, sigma^2), sigma in (0.08, 0.12, 0.18, 0.26, 0.38)
* ``blur``            Gaussian blur, sigma (pixels) in (0.4, 0.6, 0.8, 1.0, 1.3)
* ``contrast``        (x - mean(x)) * c + mean(x), c in (0.4, 0.3, 0.2, 0.1, 0.05)
* ``impulse``         salt-and-pepper with probability p in (0.03, 0.06, 0.09, 0.17, 0.27)

All results are clipped to [0, 1]. Randomness comes from a seeded ``numpy.random.Generator``.
Streams are the test split in random or label-sorted order (the non-i.i.d. setting of SAR,
"Towards Stable Test-Time Adaptation in Dynamic Wild World") at any batch size, 1 included.
"""

from collections.abc import Iterator

import numpy as np

from entropix.validation import check_choice

SEVERITY = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "blur": (0.4, 0.6, 0.8, 1.0, 1.3),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "impulse": (0.03, 0.06, 0.09, 0.17, 0.27),
}
CORRUPTIONS = tuple(SEVERITY)


def load_digits_split(test_fraction: float = 0.3, seed: int = 0):
    """(x_train, y_train, x_test, y_test): images float32 [N, 8, 8, 1] in [0, 1], int32 labels."""
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
    """Apply corruption ``kind`` at ``severity`` (1-5) to images ``[N, H, W, C]`` in [0, 1]."""
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


def stream(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    order: str = "random",
    rng: np.random.Generator | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x_batch, y_batch)`` over all of ``x`` in ``random`` or ``label-sorted`` order.

    The last batch may be smaller. ``random`` needs ``rng``; ``label-sorted`` is deterministic
    (stable sort by label), the hardest non-i.i.d. stream.
    """
    check_choice(order, "order", ("random", "label-sorted"))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if order == "random":
        if rng is None:
            raise ValueError("order='random' needs a seeded rng (numpy Generator)")
        index = rng.permutation(len(y))
    else:
        index = np.argsort(y, kind="stable")
    for start in range(0, len(index), batch_size):
        chunk = index[start : start + batch_size]
        yield x[chunk], y[chunk]
