import json
from dataclasses import replace

import jax
import numpy as np
import pytest
from flax import nnx

from entropix.tasks import corrupt, load_digits_split
from entropix.train import MetricsLogger
from experiments.tta import (
    Config,
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
    log = MetricsLogger(tmp_path_factory.mktemp("src"), tensorboard=False)
    model = train_source(config, x, y, log)
    log.close()
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
        m: evaluate(make_adapter(m, config, fisher=fisher), model, noisy, yt, 64, "random", 0)
        for m in ("source", "tent", "eata", "sar", "deyo", "tsallis")
    }
    assert accs["tent"] > accs["source"]
    assert all(0.5 < a <= 1.0 for a in accs.values())


def test_tent_updates_only_bn_affine_and_batch_of_one_runs(source):
    config, model, _, _, noisy = source
    graphdef, affine, rest = split_model(model)
    leaves = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(affine)}
    assert leaves == {"norms/0/scale", "norms/0/bias", "norms/1/scale", "norms/1/bias"}
    init, step = make_adapter("tent", config)
    state = init(affine)
    new, logits = step(state, rest, noisy[:8], jax.random.key(0), graphdef)
    assert logits.shape == (8, 10)
    before, after = jax.tree.leaves(state["bn"]), jax.tree.leaves(new["bn"])
    assert not all(np.allclose(a, b) for a, b in zip(before, after, strict=True))
    _, logits = step(state, rest, noisy[:1], jax.random.key(0), graphdef)
    assert logits.shape == (1, 10) and np.isfinite(np.asarray(logits)).all()
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
    assert (tmp_path / "metrics.jsonl").is_file()


def test_eata_fisher_term_anchors_the_affine_parameters(source):
    config, model, xt, _, noisy = source
    graphdef, affine, rest = split_model(model)
    fisher = eata_fisher(model, xt, config)
    assert jax.tree.structure(fisher) == jax.tree.structure(affine)
    assert all(np.all(np.asarray(f) >= 0) for f in jax.tree.leaves(fisher))
    assert sum(float(np.sum(f)) for f in jax.tree.leaves(fisher)) > 0

    def drift(beta):
        init, step = make_adapter("eata", replace(config, eata_fisher_beta=beta), fisher=fisher)
        state = init(affine)
        for i in range(5):
            state, _ = step(state, rest, noisy[64 * i : 64 * (i + 1)], jax.random.key(i), graphdef)
        moved = jax.tree.map(lambda a, b: np.sum((np.asarray(a) - np.asarray(b)) ** 2),
                             state["bn"], affine)  # fmt: skip
        return sum(jax.tree.leaves(moved))

    assert drift(1e6) < 0.5 * drift(0.0)  # a strong Fisher term holds theta near theta_0
    with pytest.raises(ValueError, match="needs fisher"):
        make_adapter("eata", config)
