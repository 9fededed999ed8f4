"""PolicyBatch: construction, broadcasting, pytree behaviour and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.losses import PolicyBatch, make_policy_batch, validate_batch

B, T, V = 3, 5, 7


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, T, V)).astype(np.float32)
    logp = rng.normal(size=(B, T)).astype(np.float32) - 2.0
    return jnp.asarray(logits), jnp.asarray(logp)


def test_per_sequence_advantages_broadcast_and_defaults():
    _, logp = _inputs()
    adv = jnp.asarray([1.0, -2.0, 0.5])
    batch = make_policy_batch(logp, adv)
    np.testing.assert_array_equal(batch.advantages, np.repeat(np.asarray(adv)[:, None], T, 1))
    np.testing.assert_array_equal(batch.mask, np.ones((B, T), np.float32))
    assert batch.mask.dtype == jnp.float32
    np.testing.assert_array_equal(batch.old_logp, logp)
    assert batch.shape == (B, T)


def test_default_old_logp_is_constant_so_ratio_gradient_is_one():
    _, logp = _inputs()

    def ratio_sum(lp):
        batch = make_policy_batch(lp, jnp.ones(B))
        return jnp.sum(jnp.exp(batch.logp - batch.old_logp))

    np.testing.assert_allclose(jax.grad(ratio_sum)(logp), np.ones((B, T)), rtol=1e-6)


def test_entropy_filled_from_logits_matches_numpy():
    logits, logp = _inputs()
    batch = make_policy_batch(logp, jnp.ones(B), logits=logits)
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(batch.entropy, -(p * np.log(p)).sum(-1), rtol=1e-5)


def test_batch_is_a_pytree_that_jits():
    logits, logp = _inputs()
    batch = make_policy_batch(
        logp,
        jnp.ones(B),
        logits=logits,
        group_ids=jnp.arange(B),
        rewards=jnp.ones(B),
        key=jax.random.key(0),
        controls={"step": jnp.float32(3)},
    )
    leaves = jax.tree_util.tree_leaves(batch)
    assert len(leaves) == 10
    out = jax.jit(lambda b: jnp.sum(b.logp * b.mask) + b.controls["step"])(batch)
    np.testing.assert_allclose(out, np.sum(np.asarray(logp)) + 3.0, rtol=1e-6)
    assert isinstance(jax.tree_util.tree_map(lambda x: x, batch), PolicyBatch)


def test_require_and_control_name_the_missing_field():
    _, logp = _inputs()
    batch = make_policy_batch(logp, jnp.ones(B))
    with pytest.raises(ValueError, match=r"my_method needs PolicyBatch\.ref_logp"):
        batch.require("ref_logp", "my_method")
    with pytest.raises(ValueError, match=r"my_method needs PolicyBatch\.controls\['step'\]"):
        batch.control("step", "my_method")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"advantages": jnp.ones(B + 1)}, ValueError, "advantages must have shape"),
        ({"advantages": jnp.ones((B, T + 1))}, ValueError, "advantages must have shape"),
        ({"advantages": jnp.ones((B, T, 1))}, ValueError, "advantages must have rank"),
        ({"advantages": jnp.ones(B, jnp.int32)}, TypeError, "advantages must be a floating"),
        ({"mask": jnp.ones((B, T + 1))}, ValueError, "mask has shape"),
        ({"mask": jnp.ones((B, T), jnp.int32)}, TypeError, "mask must be bool or floating"),
        ({"old_logp": jnp.ones((B, 1))}, ValueError, "old_logp must have shape"),
        ({"ref_logp": jnp.ones((T, B))}, ValueError, "ref_logp must have shape"),
        ({"entropy": jnp.ones(B)}, ValueError, "entropy must have shape"),
        ({"logits": jnp.ones((B, T))}, ValueError, "logits must have rank 3"),
        ({"logits": jnp.ones((B, T + 1, V))}, ValueError, "logits must have shape"),
        ({"group_ids": jnp.ones(B)}, TypeError, "group_ids must be integer"),
        ({"group_ids": jnp.ones(B + 1, jnp.int32)}, ValueError, "group_ids must have shape"),
        ({"rewards": jnp.ones((B, 1))}, ValueError, "rewards must have shape"),
    ],
)
def test_bad_input_gives_a_named_error(kwargs, error, match):
    _, logp = _inputs()
    args = {"advantages": jnp.ones(B), **kwargs}
    with pytest.raises(error, match=match):
        make_policy_batch(logp, **args)


def test_bad_logp_and_direct_construction_are_validated():
    with pytest.raises(ValueError, match="logp must have rank 2"):
        make_policy_batch(jnp.ones(4), jnp.ones(4))
    with pytest.raises(TypeError, match="logp must be a floating"):
        make_policy_batch(jnp.ones((2, 3), jnp.int32), jnp.ones(2))
    ones = jnp.ones((B, T))
    bad = PolicyBatch(logp=ones, old_logp=ones, advantages=ones[:, :2], mask=ones)
    with pytest.raises(ValueError, match="advantages must have shape"):
        validate_batch(bad)
