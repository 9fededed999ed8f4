import json
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from entropix.tasks import corrupt, load_digits_split
from experiments.tta import (
    Config,
    adapting,
    eata_fisher,
    evaluate,
    make_adapter,
    run,
    split_model,
    train_source,
)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    config = Config(train_steps=150, lr=0.05)
    x, y, xt, yt = load_digits_split(seed=0)
    model = train_source(config, x, y, tmp_path_factory.mktemp("src"))
    noisy = corrupt(xt, "gaussian_noise", 5, np.random.default_rng(0))
    return config, model, xt, yt, noisy


def test_source_model_learns_clean_digits(source):
    config, model, xt, yt, _ = source
    acc = evaluate(make_adapter("source", config), model, xt, yt, 64, "random", 0)
    assert acc > 0.9


def test_tent_beats_source_on_noise_and_every_method_runs(source):
    config, model, xt, yt, noisy = source
    fisher = eata_fisher(model, xt, config)
    accs = {
        m: evaluate(
            make_adapter(m, config, fisher=fisher, model=model), model, noisy, yt, 64, "random", 0
        )
        for m in ("source", "tent", "eata", "sar", "deyo", "tsallis")
    }
    assert accs["tent"] > accs["source"]
    assert all(0.5 < a <= 1.0 for a in accs.values())


def _affine(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_tent_updates_only_bn_affine_and_batch_of_one_runs(source):
    config, model, yt, _, noisy = source
    adapter = make_adapter("tent", config)
    state = adapter.start(model)
    leaves = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(state.params)}
    assert leaves == {f"classifier/norms/{i}/{p}" for i in (0, 1) for p in ("scale", "bias")}
    frozen = [np.asarray(x) for x in jax.tree.leaves(nnx.state(state.model(), nnx.Param))]
    batch = {"x": jnp.asarray(noisy[:8]), "y": jnp.zeros(8, jnp.int32)}
    new, metrics = adapter.step(state, batch)
    assert 0 <= float(metrics["correct"]) <= 8
    assert not all(np.allclose(a, b) for a, b in zip(_affine(state), _affine(new), strict=True))
    after = [np.asarray(x) for x in jax.tree.leaves(nnx.state(new.model(), nnx.Param))]
    changed = sum(not np.array_equal(a, b) for a, b in zip(frozen, after, strict=True))
    assert changed == 4  # the two norms' scale and bias, nothing else
    _, metrics = adapter.step(new, {"x": batch["x"][:1], "y": batch["y"][:1]})
    assert np.isfinite(float(metrics["loss"]))
    with pytest.raises(ValueError, match="method='tnet'"):
        make_adapter("tnet", config)


def test_smoke_run_table(tmp_path):
    config = Config(
        train_steps=60,
        corruptions=("gaussian_noise",),
        severities=(5,),
        methods=("source", "bn_stats", "tent"),
        extra_streams=True,
    )
    summary = run(config, tmp_path)
    assert set(summary) == {f"mean_accuracy/{m}" for m in config.methods}
    rows = json.loads((tmp_path / "tta.json").read_text())
    assert [(r["order"], r["batch_size"]) for r in rows] == [
        ("random", 64),
        ("random", 64),
        ("label-sorted", 64),
        ("random", 1),
    ]
    assert "| gaussian_noise | 5 |" in (tmp_path / "tta.md").read_text()
    assert (tmp_path / "source" / "metrics.jsonl").is_file()


def test_eata_fisher_term_anchors_the_affine_parameters(source):
    config, model, xt, yt, noisy = source
    affine = split_model(adapting(model))[1]
    fisher = eata_fisher(model, xt, config)
    assert jax.tree.structure(fisher) == jax.tree.structure(affine)
    assert all(np.all(np.asarray(f) >= 0) for f in jax.tree.leaves(fisher))
    assert sum(float(np.sum(f)) for f in jax.tree.leaves(fisher)) > 0

    def drift(beta):
        adapter = make_adapter(
            "eata", replace(config, eata_fisher_beta=beta), fisher=fisher, model=model
        )
        state = adapter.start(model)
        for i in range(5):
            rows = slice(64 * i, 64 * (i + 1))
            state, _ = adapter.step(
                state, {"x": jnp.asarray(noisy[rows]), "y": jnp.asarray(yt[rows])}
            )
        moved = jax.tree.map(lambda a, b: np.sum((np.asarray(a) - np.asarray(b)) ** 2),
                             state.params, affine)  # fmt: skip
        return sum(jax.tree.leaves(moved))

    assert drift(1e6) < 0.5 * drift(0.0)  # a strong Fisher term holds theta near theta_0
    with pytest.raises(ValueError, match="needs fisher"):
        make_adapter("eata", config)
