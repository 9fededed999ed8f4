import numpy as np
import pytest

from entropix.tasks import (
    CORRUPTIONS,
    corpus,
    corrupt,
    corrupted_stream,
    lm_windows,
    load_digits_split,
)


@pytest.fixture(scope="module")
def split():
    return load_digits_split(seed=0)


def test_split_shapes_and_range(split):
    x, y, xt, yt = split
    assert x.shape[1:] == (8, 8, 1) and x.dtype == np.float32 and len(x) + len(xt) == 1797
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(np.unique(yt)) == set(range(10))


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_grows_with_severity_and_is_seeded(split, kind):
    xt = split[2][:100]
    dist = [np.abs(corrupt(xt, kind, s, np.random.default_rng(0)) - xt).mean() for s in range(1, 6)]
    assert all(a < b for a, b in zip(dist, dist[1:], strict=False))
    out = corrupt(xt, kind, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(out, corrupt(xt, kind, 3, np.random.default_rng(1)))
    assert out.shape == xt.shape and out.min() >= 0 and out.max() <= 1


def test_blur_and_contrast_references():
    x = np.zeros((1, 8, 8, 1), np.float32)
    x[0, 4, 4, 0] = 1.0
    out = corrupt(x, "blur", 3, np.random.default_rng(0))  # sigma 0.8, edges far: mass kept
    assert out.sum() == pytest.approx(1.0, rel=1e-4) and out[0, 4, 4, 0] < 1.0
    np.testing.assert_allclose(out[0, :, :, 0], out[0, :, :, 0].T, atol=1e-7)  # isotropic
    low = corrupt(x, "contrast", 5, np.random.default_rng(0))
    np.testing.assert_allclose(low, (x - x.mean()) * 0.05 + x.mean(), atol=1e-7)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "blur", 6, np.random.default_rng(0))


def test_stream_cycles_the_split_with_fresh_noise(split):
    _, _, xt, yt = split
    xt, yt = xt[:50], yt[:50]
    noise = [("gaussian_noise", 3)]
    xs, ys = corrupted_stream(xt, yt, noise, batch_size=8, steps=20, seed=3)  # 160 = 3.2 cycles
    assert xs.shape == (20, 8, 8, 8, 1) and ys.shape == (20, 8) and xs.dtype == np.float32
    flat_x, flat_y = xs.reshape(160, -1), ys.ravel()
    clean = xt.reshape(50, -1)
    cycles = [slice(50 * c, 50 * (c + 1)) for c in range(3)]
    nearest = [np.argmin(((flat_x[c, None] - clean[None]) ** 2).sum(-1), axis=1) for c in cycles]
    for c, near in zip(cycles, nearest, strict=True):  # each cycle: the whole split once
        assert sorted(near.tolist()) == list(range(50)) and (flat_y[c] == yt[near]).all()
    for a, b in ((0, 1), (1, 2)):  # a fresh order and fresh noise on every image per cycle
        assert (nearest[a] != nearest[b]).any()
        first = flat_x[cycles[a]][np.argsort(nearest[a])]
        second = flat_x[cycles[b]][np.argsort(nearest[b])]
        assert not np.isclose(first, second).all(axis=1).any()
    again = corrupted_stream(xt, yt, noise, batch_size=8, steps=20, seed=3)
    np.testing.assert_array_equal(again[0], xs)  # seeded
    other = corrupted_stream(xt, yt, noise, batch_size=8, steps=20, seed=4)[0]
    assert not np.allclose(other, xs)


def test_stream_orders_batch_one_and_mixtures(split):
    _, _, xt, yt = split
    xs, ys = corrupted_stream(xt, yt, [("blur", 5)], batch_size=64, steps=17, order="label-sorted")
    cycle = ys.ravel()[: len(yt)]
    assert (np.diff(cycle) >= 0).all() and (np.bincount(cycle) == np.bincount(yt)).all()
    assert ys.ravel()[len(yt)] == 0  # the next cycle starts again at class 0
    one_x, one_y = corrupted_stream(xt, yt, [("impulse", 1)], batch_size=1, steps=120)
    assert one_x.shape == (120, 1, 8, 8, 1) and len(set(one_y[:10, 0].tolist())) > 1
    kinds = [("contrast", 5), ("blur", 5)]
    mx, my = corrupted_stream(xt[:30], yt[:30], kinds, batch_size=6, steps=10)  # one cycle
    want = np.concatenate([corrupt(xt[:30], k, s, np.random.default_rng(0)) for k, s in kinds])
    got = mx.reshape(60, -1)
    match = [np.flatnonzero(np.abs(got - w.ravel()).max(1) < 1e-6) for w in want]
    assert all(len(m) == 1 for m in match)  # each image once per corruption
    assert sorted(my.ravel().tolist()) == sorted(np.tile(yt[:30], 2).tolist())
    with pytest.raises(ValueError, match="steps must be"):
        corrupted_stream(xt, yt, kinds, batch_size=4, steps=0)
    with pytest.raises(ValueError, match="order="):
        corrupted_stream(xt, yt, kinds, batch_size=4, steps=2, order="sorted")
    with pytest.raises(ValueError, match="at least one"):
        corrupted_stream(xt, yt, [], batch_size=4, steps=2)


def test_text_corpus():
    text = corpus(np.random.default_rng(0), 50)
    assert text == corpus(np.random.default_rng(0), 50) and text.count(".") == 50
    windows = lm_windows(text, 16, 4, np.random.default_rng(1))
    assert windows.shape == (4, 17) and windows.dtype == np.int32
    with pytest.raises(ValueError, match="need more than"):
        lm_windows("ab", 16, 1, np.random.default_rng(0))
