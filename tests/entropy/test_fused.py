import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from entropix.entropy import naive_token_logprobs_and_entropy, token_logprobs_and_entropy
from tests.entropy import reference as ref


def make_inputs(n, d, v, seed=0, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    hidden = jax.random.normal(k1, (n, d), dtype)
    unembed = (jax.random.normal(k2, (d, v)) / np.sqrt(d) * 3).astype(dtype)
    targets = jax.random.randint(k3, (n,), 0, v)
    return hidden, unembed, targets


def weighted_sum(fn):
    """A scalar that weighs every output differently, so every cotangent is exercised."""

    def f(hidden, unembed):
        logp, entropy = fn(hidden, unembed)
        n = logp.shape[0]
        return jnp.sum(logp * jnp.linspace(-1, 2, n)) + jnp.sum(entropy * jnp.cos(jnp.arange(n)))

    return f


@pytest.mark.parametrize("v,chunk", [(96, 32), (100, 32), (100, 100), (37, 64)])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_values_match_numpy(v, chunk, temperature):
    hidden, unembed, targets = make_inputs(24, 8, v)
    logp, entropy = token_logprobs_and_entropy(hidden, unembed, targets, chunk, temperature)
    logits = np.asarray(hidden, np.float64) @ np.asarray(unembed, np.float64)
    p = ref.softmax(logits, temperature)
    np.testing.assert_allclose(
        logp, np.log(p[np.arange(24), np.asarray(targets)]), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(entropy, ref.shannon(p), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("v,chunk,temperature", [(100, 32, 1.0), (64, 16, 0.7)])
def test_gradients_match_naive_path(v, chunk, temperature):
    hidden, unembed, targets = make_inputs(16, 8, v, seed=1)
    fused = weighted_sum(lambda h, w: token_logprobs_and_entropy(h, w, targets, chunk, temperature))
    naive = weighted_sum(lambda h, w: naive_token_logprobs_and_entropy(h, w, targets, temperature))
    g_fused = jax.grad(fused, argnums=(0, 1))(hidden, unembed)
    g_naive = jax.grad(naive, argnums=(0, 1))(hidden, unembed)
    for a, b in zip(g_fused, g_naive, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_check_grads_against_finite_differences():
    hidden, unembed, targets = make_inputs(6, 4, 20, seed=2)
    fused = weighted_sum(lambda h, w: token_logprobs_and_entropy(h, w, targets, 8))
    check_grads(fused, (hidden, unembed), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)
    naive = weighted_sum(lambda h, w: naive_token_logprobs_and_entropy(h, w, targets))
    check_grads(naive, (hidden, unembed), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)


def test_works_under_jit_and_vmap_and_bf16():
    hidden, unembed, targets = make_inputs(8, 8, 50, dtype=jnp.bfloat16)
    logp, entropy = jax.jit(lambda h, w, y: token_logprobs_and_entropy(h, w, y, 16))(
        hidden, unembed, targets
    )
    assert logp.dtype == jnp.float32 and entropy.dtype == jnp.float32
    ref_logp, ref_entropy = naive_token_logprobs_and_entropy(hidden, unembed, targets)
    np.testing.assert_allclose(logp, ref_logp, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(entropy, ref_entropy, rtol=1e-4, atol=1e-4)
    grads = jax.grad(
        weighted_sum(lambda h, w: token_logprobs_and_entropy(h, w, targets, 16)), argnums=(0, 1)
    )(hidden, unembed)
    assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.bfloat16
    batched = jax.vmap(lambda h, y: token_logprobs_and_entropy(h, unembed, y, 16))(
        hidden.reshape(2, 4, 8), targets.reshape(2, 4)
    )
    np.testing.assert_allclose(batched[1].reshape(-1), entropy, rtol=1e-6)


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_fused_temporary_memory_is_8x_below_naive():
    """XLA's own memory analysis at N=2048, D=256, V=32768 (compiled only, never run).

    Compiled at JAX's default matmul precision, as programs are (the suite's conftest asks for
    "highest", which on GPUs adds a fixed cuBLAS fp32-emulation workspace to every matmul).
    """
    n, d, v = 2048, 256, 32768
    hidden = jax.ShapeDtypeStruct((n, d), jnp.float32)
    unembed = jax.ShapeDtypeStruct((d, v), jnp.float32)
    targets = jnp.zeros((n,), jnp.int32)

    def value(fn):
        return lambda h, w: sum(jnp.sum(x) for x in fn(h, w, targets))

    fused, naive = value(token_logprobs_and_entropy), value(naive_token_logprobs_and_entropy)
    grad = lambda f: jax.grad(f, argnums=(0, 1))
    with jax.default_matmul_precision("default"):
        forward_ratio = _temp_bytes(naive, hidden, unembed) / _temp_bytes(fused, hidden, unembed)
        backward_ratio = _temp_bytes(grad(naive), hidden, unembed) / _temp_bytes(
            grad(fused), hidden, unembed
        )
    assert forward_ratio >= 8, forward_ratio
    assert backward_ratio >= 8, backward_ratio


def test_bad_input_errors():
    hidden, unembed, targets = make_inputs(4, 8, 10)
    with pytest.raises(ValueError, match=r"unembed must have shape \(8, \?\)"):
        token_logprobs_and_entropy(hidden, unembed.T, targets)
    with pytest.raises(ValueError, match=r"targets must have shape \(4,\)"):
        token_logprobs_and_entropy(hidden, unembed, targets[:3])
    with pytest.raises(TypeError, match="targets must be integer"):
        token_logprobs_and_entropy(hidden, unembed, targets.astype(jnp.float32))
    with pytest.raises(TypeError, match="hidden must be a floating-point"):
        token_logprobs_and_entropy(hidden.astype(jnp.int32), unembed, targets)
    with pytest.raises(ValueError, match="hidden must have rank 2"):
        token_logprobs_and_entropy(hidden[None], unembed, targets)
    with pytest.raises(ValueError, match="chunk must be > 0"):
        token_logprobs_and_entropy(hidden, unembed, targets, chunk=0)
