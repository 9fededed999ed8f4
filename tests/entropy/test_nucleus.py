"""The top-p nucleus and the entropy inside it against numpy's stable sort, ties included."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.entropy import nucleus_mask, top_p_entropy
from tests.entropy import reference as ref
from tests.train import scripts


def np_nucleus(logits, top_p):
    """Stable descending sort, keep while the mass before < top_p (and p > 0), scatter back."""
    p = ref.softmax(logits)
    order = np.argsort(-p, axis=-1, kind="stable")
    ps = np.take_along_axis(p, order, -1)
    keep_sorted = ((np.cumsum(ps, -1) - ps) < top_p) & (ps > 0)
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    return keep


def tie_heavy_logits(v, seed):
    """Rows of small integers (ties everywhere, often at the boundary), continuous rows, uniform
    rows (one tied group) and rows with -inf classes."""
    rng = np.random.default_rng(seed)
    logits = rng.integers(-3, 3, size=(300, v)).astype(np.float32)
    logits[:60] = rng.normal(size=(60, v)) * 2
    logits[60:70] = 0.0
    logits[70:80, : v // 3] = -np.inf
    return logits


@pytest.mark.parametrize("v", [1, 2, 9, 32, 64, 65, 130])
def test_nucleus_matches_numpy_with_ties(v):
    """The set keeps exactly numpy's classes, from one class to more than a top-k truncation.
    Classes whose mass before them is within 1e-6 of top_p (float32 rounding decides those) are
    not compared."""
    logits = tie_heavy_logits(v, v)
    for top_p in (0.05, 0.37, 0.81, 0.999, 1.0):
        want, loose = np_nucleus(logits, top_p - 1e-6), np_nucleus(logits, top_p + 1e-6)
        clear = want == loose
        assert clear.mean() > 0.999
        got = np.asarray(nucleus_mask(jnp.asarray(logits), top_p))
        np.testing.assert_array_equal(got[clear], want[clear], err_msg=f"top_p={top_p}")
        assert got[np.isneginf(logits)].sum() == 0 and got.any(-1).all()


@pytest.mark.parametrize("v", [9, 65])
def test_top_p_entropy_is_the_renormalised_nucleus_entropy(v):
    logits = tie_heavy_logits(v, 1 + v)
    top_p = 0.81
    q = np.where(np_nucleus(logits, top_p), ref.softmax(logits), 0.0)
    want = ref.shannon(q / q.sum(-1, keepdims=True))
    np.testing.assert_allclose(top_p_entropy(logits, top_p), want, rtol=1e-5, atol=1e-6)
    # bounds: 0 <= H^p <= log |nucleus|; the full entropy at top_p = 1
    size = np.asarray(nucleus_mask(logits, top_p)).sum(-1)
    h = np.asarray(top_p_entropy(logits, top_p))
    assert np.all(h >= -1e-6) and np.all(h <= np.log(size) + 1e-5)
    full = ref.shannon(ref.softmax(logits))
    np.testing.assert_allclose(top_p_entropy(logits, 1.0), full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("v", [9, 65])
def test_top_p_entropy_derivatives_match_finite_differences(v):
    """Reverse and forward mode (a custom JVP) against central differences of the numpy
    H^p with the nucleus held fixed (the choice of the set is not differentiated), on rows with
    ties and -inf classes; bf16 logits get a bf16 gradient."""
    logits = tie_heavy_logits(v, 2 + v)[::10]
    keep = np_nucleus(logits, 0.81)

    def np_h(z):
        q = np.where(keep, ref.softmax(z), 0.0)
        return ref.shannon(q / q.sum(-1, keepdims=True))

    weights = np.random.default_rng(v).normal(size=len(logits))
    finite = np.where(np.isfinite(logits), logits, 0.0)
    eps, want = 1e-4, np.zeros_like(finite, np.float64)
    for index in np.ndindex(*finite.shape):
        step = np.zeros_like(finite, np.float64)
        step[index] = eps
        z = np.where(np.isfinite(logits), finite + step, -np.inf)
        z_minus = np.where(np.isfinite(logits), finite - step, -np.inf)
        want[index] = weights @ (np_h(z) - np_h(z_minus)) / (2 * eps)

    def weighted(z):
        return jnp.sum(jnp.asarray(weights, jnp.float32) * top_p_entropy(z, 0.81))

    z = jnp.asarray(logits)
    got = jax.grad(weighted)(z)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-5)
    tangent = jnp.asarray(np.random.default_rng(0).normal(size=logits.shape), jnp.float32)
    _, forward = jax.jvp(weighted, (z,), (tangent,))
    np.testing.assert_allclose(forward, np.sum(want * np.asarray(tangent)), rtol=1e-4, atol=1e-5)
    low = jax.grad(weighted)(z.astype(jnp.bfloat16))
    assert low.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(low)))


def test_nucleus_any_leading_shape():
    """Leading axes of any size, an odd number of rows among them, and a single row give
    numpy's set."""
    logits = tie_heavy_logits(32, 5)
    for shape in [(3, 7, 32), (1, 32), (32,)]:
        rows = logits[: int(np.prod(shape[:-1]))]
        got = np.asarray(nucleus_mask(jnp.asarray(rows.reshape(shape)), 0.6))
        np.testing.assert_array_equal(got, np_nucleus(rows, 0.6).reshape(shape))


def test_nucleus_bad_input():
    with pytest.raises(ValueError, match="top_p must be in"):
        nucleus_mask(jnp.zeros((2, 4)), 1.5)
    with pytest.raises(ValueError, match="top_p"):
        top_p_entropy(jnp.zeros((2, 4)), 0.0)
    with pytest.raises(TypeError, match="logits"):
        nucleus_mask(jnp.zeros((2, 4), jnp.int32), 0.5)


def test_nucleus_under_jit_and_vmap():
    logits = jnp.asarray(tie_heavy_logits(12, 3)[:40])
    direct = nucleus_mask(logits, 0.6)
    np.testing.assert_array_equal(jax.jit(lambda z: nucleus_mask(z, 0.6))(logits), direct)
    np.testing.assert_array_equal(jax.vmap(lambda z: nucleus_mask(z, 0.6))(logits), direct)


SHARDED_CHECK = """
import jax
jax.config.update("jax_num_cpu_devices", 8)
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from entropix.entropy import nucleus_mask, top_p_entropy

logits = 2 * jax.random.normal(jax.random.PRNGKey(0), (16, 9, 32))
logits = logits.at[3].set(jax.numpy.round(logits[3]))  # ties
mesh = Mesh(np.array(jax.devices()), ("data",))
sharded = jax.device_put(logits, NamedSharding(mesh, PartitionSpec("data")))
for fn, rtol in ((lambda z: nucleus_mask(z, 0.7), 0), (lambda z: top_p_entropy(z, 0.7), 1e-6)):
    compiled = jax.jit(fn).lower(sharded).compile()
    collectives = [c for c in ("all-gather", "all-reduce", "all-to-all", "collective-permute")
                   if c in compiled.as_text()]
    assert not collectives, collectives
    np.testing.assert_allclose(compiled(sharded), jax.jit(fn)(logits), rtol=rtol, atol=rtol)
print("ok")
"""


def test_nucleus_of_a_sharded_batch_stays_on_its_devices():
    """On a batch sharded over 8 (simulated) devices the set and H^p are those of one device,
    and the compiled program moves no data between devices."""
    result = subprocess.run(
        [sys.executable, "-c", SHARDED_CHECK],
        env=scripts.script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr
