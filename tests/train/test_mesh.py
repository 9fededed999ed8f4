"""Partition rules, mesh construction and batch placement (single device; see
test_distributed.py for the 8-device equivalence run)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, AxisType
from jax.sharding import PartitionSpec as P

from entropix.train import (
    AXES,
    DEFAULT_RULES,
    TrainState,
    make_mesh,
    shard_batch,
    spec_for,
    state_shardings,
    tree_shardings,
)
from entropix.train.mesh import path_name
from tests.train import toy

MESH_241 = AbstractMesh((2, 4, 1), AXES, axis_types=(AxisType.Auto,) * 3)


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("params/layers/0/attn/q_proj/kernel/value", (128, 128), P("fsdp", "tensor")),
        ("opt_state/0/mu/layers/1/mlp/down_proj/kernel/value", (512, 128), P("tensor", "fsdp")),
        ("params/embed/embedding/value", (128, 64), P("tensor", "fsdp")),
        ("params/layers/0/attn_norm/weight/value", (128,), P()),
        ("params/conv/kernel/value", (3, 3, 8, 16), P()),  # rank 4: no 2-D rule applies
        ("params/hidden/kernel/value", (6, 16), P(None, "tensor")),  # 6 % fsdp(4) != 0
        ("opt_state/0/count", (), P()),
    ],
)
def test_rules_match_paths_ranks_and_divisibility(name, shape, expected):
    assert spec_for(name, shape, MESH_241, DEFAULT_RULES) == expected


def test_first_matching_rule_wins_and_tuples_of_axes():
    rules = [(r"special", P(("data", "fsdp"), None)), (r"kernel", P("fsdp", None))]
    assert spec_for("a/special/kernel", (16, 3), MESH_241, rules) == P(("data", "fsdp"), None)
    assert spec_for("a/special/kernel", (12, 3), MESH_241, rules) == P(None, None)  # 12 % 8
    assert spec_for("a/other/kernel", (16, 3), MESH_241, rules) == P("fsdp", None)


def test_state_shardings_cover_params_and_optimizer_moments():
    state = TrainState.create(
        toy.model_fn(nnx.Rngs(0)), optax.adam(1e-3), rng=jax.random.PRNGKey(0)
    )
    mesh = make_mesh(1, 1, 1)
    shardings = state_shardings(jax.eval_shape(lambda: state), mesh)
    assert jax.tree.structure(shardings) == jax.tree.structure(state)
    names = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert "params/hidden/kernel/value" in names
    assert "opt_state/0/mu/hidden/kernel/value" in names and "rng" in names
    leaves = tree_shardings({"w": jnp.ones((4, 4))}, mesh, [(r"w", P("fsdp", "tensor"))])
    assert leaves["w"].spec == P("fsdp", "tensor")


def test_make_mesh_sizes_and_errors():
    mesh = make_mesh()
    assert mesh.axis_names == AXES and mesh.devices.size == jax.device_count()
    with pytest.raises(ValueError, match="needs 2 devices"):
        make_mesh(2, 1, 1)
    with pytest.raises(ValueError, match="at most one -1"):
        make_mesh(-1, -1, 1)
    with pytest.raises(ValueError, match="positive"):
        make_mesh(0, 1, 1)


def test_shard_batch_places_numpy_and_jax_leaves():
    mesh = make_mesh(1, 1, 1)
    batch = shard_batch({"x": np.arange(6.0).reshape(3, 2), "t": jnp.ones(3), "s": 2.0}, mesh)
    assert batch["x"].sharding.spec == P(("data", "fsdp"))
    assert batch["s"].sharding.spec == P()
    np.testing.assert_array_equal(batch["x"], np.arange(6.0).reshape(3, 2))
