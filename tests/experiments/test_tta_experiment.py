import json
import math
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from entropix.report import render
from entropix.results import read_results
from entropix.tasks import corrupted_stream, load_digits_split
from experiments.tta import (
    METHODS,
    Config,
    adaptation_lr,
    adapting,
    eata_fisher,
    evaluate,
    make_adapter,
    methods_for,
    run,
    scaled_constants,
    split_model,
    stack,
    streams,
    train_source,
)

CONFIG = Config(train_steps=80, eata_fisher_samples=128)
# each method once on a batch-independent norm (its code path does not depend on which one;
# eata / sar share theirs with eata_scaled / sar_scaled), every method on BatchNorm
ON_GN_LN = {
    "group": ("tent", "eata_scaled", "sar_scaled"),
    "layer": ("source", "deyo", "tsallis"),
}


@pytest.fixture(scope="module")
def data():
    x, y, xt, yt = load_digits_split(seed=0)
    noisy = corrupted_stream(xt, yt, [("gaussian_noise", 5)], batch_size=64, steps=8, seed=0)
    low_contrast = corrupted_stream(xt, yt, [("contrast", 5)], batch_size=32, steps=8, seed=0)
    return x, y, xt, yt, noisy, low_contrast


@pytest.fixture(scope="module")
def sources(data, tmp_path_factory):
    x, y, *_ = data
    return {
        norm: train_source(CONFIG, norm, 0, x, y, tmp_path_factory.mktemp(norm))
        for norm in ("batch", "group", "layer")
    }


def test_source_models_learn_and_predict_only_matches_a_plain_forward(data, sources):
    _, _, xt, yt, (xs, ys), _ = data
    for norm, model in sources.items():
        assert float(jnp.mean(model(jnp.asarray(xt)).argmax(-1) == yt)) > 0.9, norm
        plain = np.mean(np.asarray(model(jnp.asarray(xs.reshape(-1, 8, 8, 1)))).argmax(-1)
                        == ys.ravel())  # fmt: skip
        got = evaluate(make_adapter("source", CONFIG, 64), model, xs, ys)
        assert got == pytest.approx(plain, abs=1e-6), norm


def _lanes(adapter, model, fisher, xs, ys):
    metrics = adapter.run(stack([adapter.start(model, fisher)]), xs[None], ys[None])
    return jax.device_get(metrics)


def test_every_method_runs_on_every_norm(data, sources):
    x, _, _, _, (xs, ys), low_contrast = data
    xs, ys = jnp.asarray(xs[:, :32]), jnp.asarray(ys[:, :32])
    runs = [("batch", m) for m in METHODS if m not in ("eata", "sar")]
    runs += [(norm, m) for norm, ms in ON_GN_LN.items() for m in ms]
    assert {m for _, m in runs} | {"eata", "sar"} == set(METHODS)
    fishers = {norm: eata_fisher(sources[norm], x, CONFIG) for norm in ("batch", "group")}
    accuracy = {}
    for norm, method in runs:
        adapter = make_adapter(method, CONFIG, 32)
        metrics = _lanes(adapter, sources[norm], fishers.get(norm), xs, ys)
        assert metrics["correct"].shape == (1, 8)
        assert np.all((metrics["correct"] >= 0) & (metrics["correct"] <= 32)), method
        if method not in ("source", "bn_stats"):
            assert np.all(np.isfinite(metrics["loss"])), (norm, method)
            assert metrics["guard/skipped"].sum() == 0, (norm, method)
        accuracy[norm, method] = metrics["correct"].sum() / ys.size
        if norm == "batch" and method in ("source", "bn_stats", "tent"):  # same shapes: no compile
            contrast = _lanes(adapter, sources[norm], None, *map(jnp.asarray, low_contrast))
            accuracy["contrast", method] = contrast["correct"].sum() / low_contrast[1].size
    # test-batch statistics (and Tent on them) recover what low contrast costs the BN model
    assert accuracy["contrast", "source"] < 0.3
    assert accuracy["contrast", "bn_stats"] > accuracy["contrast", "source"] + 0.3
    assert accuracy["contrast", "tent"] > accuracy["contrast", "source"] + 0.3
    assert methods_for(CONFIG, "group") == [m for m in METHODS if m != "bn_stats"]


def test_tent_updates_only_norm_affine_and_batch_of_one_runs(data, sources):
    *_, (xs, _), _ = data
    for norm in ("batch", "layer"):
        adapter = make_adapter("tent", CONFIG, 8)
        state = adapter.start(sources[norm])
        leaves = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(state.params)}
        assert leaves == {f"classifier/norms/{i}/{p}" for i in (0, 1) for p in ("scale", "bias")}
        before = [np.asarray(v) for v in jax.tree.leaves(nnx.state(state.model(), nnx.Param))]
        batch = {"x": jnp.asarray(xs[0, :8]), "y": jnp.zeros(8, jnp.int32)}
        new, metrics = adapter.step(state, batch)
        assert 0 <= float(metrics["correct"]) <= 8
        after = [np.asarray(v) for v in jax.tree.leaves(nnx.state(new.model(), nnx.Param))]
        changed = sum(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        assert changed == 4, norm  # the two norms' scale and bias, nothing else
        one = make_adapter("tent", CONFIG, 1)
        _, metrics = one.step(one.start(sources[norm]), {k: v[:1] for k, v in batch.items()})
        assert np.isfinite(float(metrics["loss"]))
    with pytest.raises(ValueError, match="method='tnet'"):
        make_adapter("tnet", CONFIG, 8)


def test_eata_fisher_term_anchors_the_affine_parameters(data, sources):
    x, _, _, _, (xs, ys), _ = data
    model = sources["batch"]
    affine = split_model(adapting(model))[1]
    fisher = eata_fisher(model, x, CONFIG)
    assert jax.tree.structure(fisher) == jax.tree.structure(affine)
    assert all(np.all(np.asarray(f) >= 0) for f in jax.tree.leaves(fisher))
    assert sum(float(np.sum(f)) for f in jax.tree.leaves(fisher)) > 0

    def drift(beta):  # sum_i F_i (theta_i - theta0_i)^2, the quantity EATA's term penalises
        adapter = make_adapter("eata_scaled", replace(CONFIG, eata_fisher_beta=beta), 64)
        state = adapter.start(model, fisher)
        for t in range(5):
            state, _ = adapter.step(state, {"x": jnp.asarray(xs[t]), "y": jnp.asarray(ys[t])})
        moved = jax.tree.map(lambda a, b, f: np.sum(f * (np.asarray(a) - np.asarray(b)) ** 2),
                             state.params, affine, fisher)  # fmt: skip
        return sum(jax.tree.leaves(moved))

    # the strongest beta whose SGD step on the quadratic term stays stable: lr * 2 beta F <= 2
    beta = 1.0 / (CONFIG.lr * max(float(np.max(f)) for f in jax.tree.leaves(fisher)))
    assert drift(beta) < 0.5 * drift(0.0)  # a strong Fisher term holds theta near theta_0
    with pytest.raises(ValueError, match="needs start"):
        make_adapter("eata", CONFIG, 64).start(model)


def test_scaled_constants_and_learning_rate_rule():
    paper = scaled_constants(1000)  # at ImageNet's class count: the papers' values
    assert paper == pytest.approx({"redundancy_margin": 0.05, "reset_constant": 0.2})
    ten = scaled_constants(10)
    assert ten["redundancy_margin"] == pytest.approx(0.5)
    assert ten["reset_constant"] == pytest.approx(0.2 / 3)
    # the rescaled margin keeps its ratio to the cosine of a one-hot with a uniform average
    for c in (10, 1000):
        one_hot, uniform = np.eye(c)[0], np.full(c, 1 / c)
        cosine = one_hot @ uniform / np.linalg.norm(uniform)
        assert scaled_constants(c)["redundancy_margin"] / cosine == pytest.approx(0.05 * 1000**0.5)
    assert adaptation_lr(0.05, 64) == 0.05 and adaptation_lr(0.05, 32) == 0.05
    assert adaptation_lr(0.05, 16) == pytest.approx(0.025)
    assert adaptation_lr(0.05, 1) == pytest.approx(0.05 / 32)
    with pytest.raises(ValueError, match="num_classes"):
        scaled_constants(1)


def test_streams_cover_the_settings_at_the_asked_lengths():
    config = Config(corruptions=("blur", "impulse"), severities=(3, 5), steps=100, single_steps=150)
    got = [(s.setting, s.corruption, s.severity, s.batch_size, s.order, s.steps)
           for s in streams(config)]  # fmt: skip
    assert got == [
        ("iid", "blur", 3, 64, "random", 100),
        ("iid", "blur", 5, 64, "random", 100),
        ("iid", "impulse", 3, 64, "random", 100),
        ("iid", "impulse", 5, 64, "random", 100),
        ("label-sorted", "blur", 5, 64, "label-sorted", 100),
        ("label-sorted", "impulse", 5, 64, "label-sorted", 100),
        ("batch-1", "blur", 5, 1, "random", 150),
        ("batch-1", "impulse", 5, 1, "random", 150),
        ("mixed", "mixed", 5, 64, "random", 100),
    ]
    assert streams(config)[-1].kinds == ("blur", "impulse")
    assert set(METHODS) >= {"source", "bn_stats", "tent", "eata", "sar", "deyo", "tsallis"}


def test_tiny_run_writes_results_json(tmp_path):
    config = Config(
        train_steps=20,
        norms=("batch", "group"),
        num_seeds=2,
        corruptions=("gaussian_noise",),
        severities=(5,),
        settings=("iid", "mixed"),
        methods=("source", "bn_stats", "tent"),
        steps=3,
    )
    summary = run(config, tmp_path)
    doc = json.loads((tmp_path / "results.json").read_text())
    ids = [t["id"] for t in doc["tables"]]
    assert ids == ["tta_summary", "tta_vs_baseline", "tta_detail", "tta_source", "tta_diagnostics"]
    tables = {t["id"]: t for t in doc["tables"]}
    summary_rows = tables["tta_summary"]["rows"]
    assert [(r[0], r[1], r[2]) for r in summary_rows] == [
        (norm, setting, "3 x 64") for norm in ("batch", "group") for setting in ("iid", "mixed")
    ]
    assert all(r[4] is None for r in summary_rows if r[0] == "group")  # no BN statistics
    deltas = tables["tta_vs_baseline"]["rows"]
    assert {(r[0], r[3]) for r in deltas} == {("batch", "bn_stats"), ("group", "source")}
    assert all(r[5] <= r[4] <= r[6] for r in deltas)  # lo <= mean <= hi
    assert len(tables["tta_detail"]["rows"]) == 2 * (3 + 2)  # streams x methods per norm
    steps_target = doc["targets"][-1]
    assert steps_target["result"] == "not met" and steps_target["value"] == 3
    assert (tmp_path / doc["figures"][0]["file"]).is_file()
    assert "## Online accuracy per model and setting" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.md").read_text() == render(doc)
    assert math.isfinite(summary["group/mean_accuracy/tent"])
    with pytest.raises(ValueError, match="norms='instance'"):
        run(replace(config, norms=("instance",)), tmp_path)


def test_committed_results_hold_the_long_streams():
    """The published run (``docs/results/tta_digits``; ``tests/test_report.py`` checks that its
    results.md is what the results.json renders to)."""
    doc = read_results(Path(__file__).resolve().parents[2] / "docs" / "results" / "tta_digits")
    assert [t["id"] for t in doc["tables"]][:2] == ["tta_summary", "tta_vs_baseline"]
    steps = next(t for t in doc["targets"] if "adaptation steps" in t["target"])
    assert steps["result"] == "met" and steps["value"] >= 100
