"""TTA classifiers: shapes, norm behaviour, and selection of the norm-affine parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from entropix.models import (
    CNNClassifier,
    Llama,
    MLPClassifier,
    get_preset,
    norm_affine_filter,
    norm_affine_mask,
    norm_affine_paths,
)

IMAGES = jax.random.normal(jax.random.key(0), (6, 8, 8, 3))


@pytest.mark.parametrize("norm", ["batch", "group", "layer"])
def test_shapes_and_norm_affine_selection(norm):
    cnn = CNNClassifier(3, 5, channels=(8, 16), norm=norm, num_groups=4, rngs=nnx.Rngs(0))
    mlp = MLPClassifier(8 * 8 * 3, 5, hidden=(16, 8), norm=norm, num_groups=4, rngs=nnx.Rngs(1))
    assert cnn(IMAGES).shape == (6, 5) and mlp(IMAGES).shape == (6, 5)
    want = {("norms", i, name) for i in range(2) for name in ("scale", "bias")}
    for model in (cnn, mlp):
        assert norm_affine_paths(model) == want
        selected = nnx.to_flat_state(nnx.state(model, norm_affine_filter(model)))
        assert {p for p, _ in selected} == want
        mask = norm_affine_mask(model)
        flat = nnx.to_flat_state(mask)
        assert {p for p, m in flat if m} == want
        assert len(flat) == len(nnx.to_flat_state(nnx.state(model, nnx.Param)))


def test_optimizer_on_the_filter_changes_only_norm_affine_params():
    model = CNNClassifier(3, 5, channels=(8,), norm="group", num_groups=2, rngs=nnx.Rngs(0))
    before = nnx.clone(model)
    opt = nnx.Optimizer(model, optax.sgd(0.5), wrt=norm_affine_filter(model))
    loss = lambda m: jnp.mean(jax.nn.logsumexp(m(IMAGES), -1))
    grads = nnx.grad(loss, argnums=nnx.DiffState(0, norm_affine_filter(model)))(model)
    opt.update(model, grads)
    changed = {
        p
        for (p, a), (_, b) in zip(
            nnx.to_flat_state(nnx.state(model, nnx.Param)),
            nnx.to_flat_state(nnx.state(before, nnx.Param)),
            strict=True,
        )
        if not np.array_equal(a.get_value(), b.get_value())
    }
    assert changed and changed <= norm_affine_paths(model)
    # the same selection through optax.masked over the full param tree
    tx = optax.masked(optax.sgd(0.5), norm_affine_mask(model))
    params = nnx.state(model, nnx.Param)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    for path, value in nnx.to_flat_state(updates):
        expect = -0.5 if path in norm_affine_paths(model) else 1.0
        assert np.all(np.asarray(value.get_value()) == expect), path


def test_groupnorm_is_per_sample_and_batchnorm_uses_batch_stats():
    group = CNNClassifier(3, 5, channels=(8,), norm="group", num_groups=2, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(group(IMAGES)[:2], group(IMAGES[:2]), rtol=1e-5, atol=1e-6)
    batch = CNNClassifier(3, 5, channels=(8,), norm="batch", rngs=nnx.Rngs(0))
    assert not np.allclose(batch(IMAGES)[:2], batch(IMAGES[:2]), atol=1e-4)
    batch.eval()
    np.testing.assert_allclose(batch(IMAGES)[:2], batch(IMAGES[:2]), rtol=1e-5, atol=1e-6)


def test_layernorm_mlp_matches_a_numpy_reference():
    model = MLPClassifier(8 * 8 * 3, 5, hidden=(16,), norm="layer", rngs=nnx.Rngs(0))
    model.norms[0].scale[...] = jnp.linspace(0.5, 1.5, 16)
    model.norms[0].bias[...] = jnp.linspace(-0.2, 0.2, 16)
    x = np.asarray(IMAGES).reshape(6, -1)
    h = x @ np.asarray(model.layers[0].kernel[...]) + np.asarray(model.layers[0].bias[...])
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)
    h = np.maximum(h * np.linspace(0.5, 1.5, 16) + np.linspace(-0.2, 0.2, 16), 0.0)
    want = h @ np.asarray(model.head.kernel[...]) + np.asarray(model.head.bias[...])
    np.testing.assert_allclose(model(IMAGES), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model(IMAGES)[:2], model(IMAGES[:2]), rtol=1e-5, atol=1e-6)


def test_decoder_norm_weights_are_selected_too():
    model = Llama(get_preset("tiny", vocab_size=16, num_layers=2), rngs=nnx.Rngs(0))
    paths = norm_affine_paths(model)
    assert ("norm", "weight") in paths and len(paths) == 2 * 2 + 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="norm='instance'"):
        MLPClassifier(4, 2, norm="instance", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="not divisible"):
        CNNClassifier(3, 2, channels=(6,), norm="group", num_groups=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="NHWC"):
        CNNClassifier(3, 2, channels=(8,), rngs=nnx.Rngs(0))(jnp.ones((2, 8, 8)))
