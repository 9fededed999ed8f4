import numpy as np
import pytest

from entropix.tasks import CORRUPTIONS, corpus, corrupt, lm_windows, load_digits_split, stream


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


def test_streams(split):
    _, _, xt, yt = split
    batches = list(stream(xt, yt, 1, "label-sorted"))
    assert len(batches) == len(yt) and batches[0][0].shape == (1, 8, 8, 1)
    labels = np.concatenate([b[1] for b in batches])
    assert (np.diff(labels) >= 0).all()
    shuffled = np.concatenate(
        [b[1] for b in stream(xt, yt, 64, "random", np.random.default_rng(0))]
    )
    assert sorted(shuffled.tolist()) == sorted(yt.tolist()) and (np.diff(shuffled) < 0).any()
    with pytest.raises(ValueError, match="seeded rng"):
        next(stream(xt, yt, 4))


def test_text_corpus():
    text = corpus(np.random.default_rng(0), 50)
    assert text == corpus(np.random.default_rng(0), 50) and text.count(".") == 50
    windows = lm_windows(text, 16, 4, np.random.default_rng(1))
    assert windows.shape == (4, 17) and windows.dtype == np.int32
    with pytest.raises(ValueError, match="need more than"):
        lm_windows("ab", 16, 1, np.random.default_rng(0))
