"""Checkpoints: exact round trip, corrupt/partial fallback, SIGKILL resume, fit's guard stop."""

import json
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from entropix.optim import EntropyHistory
from entropix.train import (
    Checkpointer,
    NonFiniteError,
    TrainConfig,
    TrainState,
    fit,
    make_train_step,
    read_metrics,
)
from entropix.train.checkpoint import as_numpy
from tests.train import scripts, toy


class DropoutMLP(nnx.Module):
    """The toy MLP plus dropout: its model state holds a typed PRNG key and a counter."""

    def __init__(self, rngs):
        self.mlp = toy.MLP(rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, x):
        return self.drop(self.mlp(x))


def _trained(steps=2):
    model = DropoutMLP(nnx.Rngs(0))
    controllers = {"hist": EntropyHistory()}
    state = TrainState.create(
        model, optax.adam(1e-2), rng=jax.random.PRNGKey(3), controllers=controllers
    )
    step = make_train_step(toy.loss_fn)
    for i in range(steps):
        state, _ = step(state, toy.batch(i))
    return state, step


def _saved_steps(directory, steps):
    state, step = _trained(0)
    saver = Checkpointer(directory, every=2, keep=5)
    states = {}
    for i in range(max(steps)):
        state, _ = step(state, toy.batch(i))
        if saver.save(state):
            states[int(state.step)] = as_numpy(state)
    saver.close()
    assert sorted(states) == sorted(steps)
    return states, jax.eval_shape(lambda: state)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_round_trip_is_exact_including_keys_controllers_and_counters(tmp_path):
    state, _ = _trained(3)
    saver = Checkpointer(tmp_path, every=100)
    assert not saver.save(state)  # step 3 is off the interval
    assert saver.save(state, force=True)
    saver.close()
    restored = Checkpointer(tmp_path).restore(jax.eval_shape(lambda: state))
    assert _same(as_numpy(restored), as_numpy(state))
    assert int(restored.step) == 3 and restored.graphdef == state.graphdef
    assert restored.controllers == state.controllers
    key_leaves = [x for x in jax.tree.leaves(restored.model_state) if x.dtype != jnp.float32]
    assert any(jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) for x in key_leaves)
    assert Checkpointer(tmp_path / "empty").restore(jax.eval_shape(lambda: state)) is None


def test_plain_pytree_with_explicit_step_round_trips_exactly(tmp_path):
    tree = {
        "params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.array([jnp.nan, -0.0])},
        "count": jnp.array(7, jnp.int32),
        "key": jax.random.key(1),
        "empty": jnp.zeros((0,)),
    }
    saver = Checkpointer(tmp_path, every=5)
    assert not saver.save(tree, step=3)  # off the interval
    assert saver.save(tree, step=0) and saver.save(tree, step=3, force=True)
    saver.close()
    meta = json.loads((tmp_path / "3" / "meta" / "metadata").read_text())
    assert meta["step"] == 3 and "data_position" not in meta
    loader = Checkpointer(tmp_path)
    assert loader.steps() == [0, 3]
    restored = loader.restore(jax.eval_shape(lambda: tree))
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    got, want = as_numpy(restored), as_numpy(tree)
    assert got.keys() == want.keys()
    for name in want:  # bit for bit (NaN and -0.0 included)
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        assert got[name].tobytes() == want[name].tobytes(), name
    loader.close()


def _corrupt_files(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        path.write_bytes(b"")


def _tamper_fingerprint(step_dir):
    path = step_dir / "meta" / "metadata"
    meta = json.loads(path.read_text())
    name = sorted(meta["fingerprint"])[0]
    meta["fingerprint"][name] = (meta["fingerprint"][name] + 1) % 2**32
    path.write_text(json.dumps(meta))


def _drop_meta(step_dir):
    for path in sorted((step_dir / "meta").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (step_dir / "meta").rmdir()


# orbax leaves an asyncio callback behind when a read fails; it is harmless here
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", [_corrupt_files, _tamper_fingerprint, _drop_meta])
def test_damaged_latest_checkpoint_is_reported_and_previous_used(tmp_path, damage):
    states, abstract = _saved_steps(tmp_path, [2, 4])
    damage(tmp_path / "4")
    reports = []
    loader = Checkpointer(tmp_path, every=2, report=reports.append)
    restored = loader.restore(abstract)
    assert _same(as_numpy(restored), states[2])
    assert len(reports) == 1 and "step 4" in reports[0] and "corrupt or incomplete" in reports[0]
    assert loader.problems == reports
    assert [p.name.split("-")[0] for p in (tmp_path / "corrupt").iterdir()] == ["4"]
    assert loader.steps() == [2]
    loader.close()


def test_sigkill_mid_run_then_resume_is_bit_exact(tmp_path):
    status, output = scripts.run("kill_resume_check.py", tmp_path / "a", tmp_path / "a.npz")
    assert status == 0, output[-4000:]
    status, output = scripts.run("kill_resume_check.py", tmp_path / "b", tmp_path / "b.npz", 7)
    assert status == -signal.SIGKILL, output[-4000:]
    assert (tmp_path / "b" / "checkpoints" / "3").is_dir()  # a checkpoint existed at the kill
    status, output = scripts.run("kill_resume_check.py", tmp_path / "b", tmp_path / "b.npz")
    assert status == 0, output[-4000:]
    assert "resumed from step" in output
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert int(a["resumed_from"]) == -1 and int(b["resumed_from"]) in (3, 6)
    names = [k for k in a.files if k != "resumed_from"]
    assert any(k.startswith("params/") for k in names) and any(k == "rng" for k in names)
    for name in names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == list(range(1, 9))


def test_fit_stops_after_consecutive_nonfinite_steps(tmp_path):
    def data(position, state):
        rows = toy.batch(position)
        if position >= 2:
            rows["x"][0, 0] = np.nan
        return rows

    config = TrainConfig(steps=10, max_nonfinite=3, checkpoint_every=100, mesh=(1, 1, 1))
    with pytest.raises(NonFiniteError, match=r"step 5: 3 non-finite steps in a row.*ce"):
        fit(
            tmp_path,
            model_fn=toy.model_fn,
            optimizer=optax.sgd(0.1),
            loss_fn=toy.loss_fn,
            data=data,
            config=config,
            stream=open(tmp_path / "progress.txt", "w"),  # noqa: SIM115
        )
    records = read_metrics(tmp_path)
    assert [r["guard/skipped"] for r in records] == [0, 0, 1, 1, 1]
    assert "non-finite" in (tmp_path / "progress.txt").read_text()
