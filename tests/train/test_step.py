"""The compiled train step against hand-written references; guard, controllers, extra args."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from entropix.dynamics import batch_predicted_entropy_change
from entropix.entropy import shannon_entropy
from entropix.optim import AdaptiveEntropyCoef, safe_step, sam
from entropix.train import NonFiniteError, TrainState, check_guard, make_train_step
from tests.train import tiny_lm, toy


def _state(tx, model_fn=toy.model_fn, controllers=None):
    model = model_fn(nnx.Rngs(0))
    return TrainState.create(model, tx, rng=jax.random.PRNGKey(1), controllers=controllers)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _reference_loss(graphdef, params, model_state, batch):
    model = nnx.merge(graphdef, params, model_state, copy=True)
    loss, _ = toy.loss_fn(model, batch, None, {})
    return loss, nnx.split(model, nnx.Param, ...)[2]


def test_step_matches_hand_written_sgd_and_threads_model_state():
    state = _state(optax.sgd(0.1))
    graphdef, params, model_state = state.graphdef, state.params, state.model_state
    step = make_train_step(toy.loss_fn)
    for i in range(3):
        batch = {k: jnp.asarray(v) for k, v in toy.batch(i).items()}
        (loss, new_ms), grads = jax.value_and_grad(_reference_loss, argnums=1, has_aux=True)(
            graphdef, params, model_state, batch
        )
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        model_state = new_ms
        old = state
        state, metrics = step(state, batch)
        np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
        np.testing.assert_allclose(metrics["optim/grad_norm"], optax.global_norm(grads), rtol=1e-5)
    assert jax.tree.leaves(old.params)[0].is_deleted()  # the old state was donated
    for a, b in zip(_leaves(state.params), _leaves(params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(_leaves(state.model_state), _leaves(model_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(state.step) == 3 and int(state.data_position) == 3
    assert set(metrics) >= {"loss", "entropy", "ce/loss", "optim/update_norm", "guard/skipped"}


def test_gradient_accumulation_matches_full_batch():
    batch = {k: jnp.asarray(v) for k, v in toy.batch(0, rows=16).items()}
    results = []
    for micro in (1, 4):
        state = _state(optax.adam(1e-2), toy.plain_model_fn)
        step = make_train_step(toy.loss_fn, micro_batches=micro)
        for _ in range(2):
            state, metrics = step(state, batch)
        results.append((_leaves(state.params), float(metrics["loss"])))
    (p1, l1), (p4, l4) = results
    np.testing.assert_allclose(l4, l1, rtol=1e-5)
    for a, b in zip(p4, p1, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="micro-batches"):
        make_train_step(toy.loss_fn, micro_batches=3)(_state(optax.sgd(0.1)), batch)


def test_nonfinite_loss_skips_update_and_counts():
    state = _state(optax.adam(1e-2), controllers={"coef": AdaptiveEntropyCoef(target=1.0)})
    step = make_train_step(toy.loss_fn, donate=False)
    good = {k: jnp.asarray(v) for k, v in toy.batch(0).items()}
    bad = dict(good, x=good["x"].at[0, 0].set(jnp.nan))
    state, _ = step(state, good)
    before = state
    for streak in (1, 2):
        state, metrics = step(state, bad)
        assert metrics["guard/skipped"] == 1 and metrics["guard/nonfinite_streak"] == streak
        for a, b in zip(
            _leaves((state.params, state.model_state, state.opt_state, state.controls)),
            _leaves((before.params, before.model_state, before.opt_state, before.controls)),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    assert int(state.step) == 3 and int(state.data_position) == 3
    host = {k: float(v) for k, v in metrics.items()}
    check_guard(host, step=3, max_nonfinite=3)  # 2 in a row: still below the limit
    with pytest.raises(NonFiniteError, match=r"step 3: 2 non-finite steps in a row.*ce"):
        check_guard(host, step=3, max_nonfinite=2)
    state, metrics = step(state, good)
    assert metrics["guard/nonfinite_streak"] == 0 and metrics["guard/nonfinite_total"] == 2


def test_several_updates_skip_only_the_nonfinite_one_and_hooks_run_in_the_step():
    """mini_batches=2: update 1 (rows 1, 3, ...) has a NaN and is skipped, update 0 is kept;
    prepare_fn sees the frozen arrays, probe_fn runs only when asked."""
    good = {k: jnp.asarray(v) for k, v in toy.batch(0).items()}
    bad = dict(good, x=good["x"].at[1, 0].set(jnp.nan))  # row 1 belongs to mini-batch 1

    def prepare(model, frozen, batch, key, controls):
        return batch, {"frozen_sum": jnp.sum(frozen["w"])}

    def probe(before, after, batch, key, controls):
        moved = optax.global_norm(
            jax.tree.map(jnp.subtract, nnx.state(after, nnx.Param), nnx.state(before, nnx.Param))
        )
        return {"probe/moved": moved}

    model = toy.plain_model_fn(nnx.Rngs(0))
    frozen = {"w": jnp.arange(3.0)}
    state = TrainState.create(model, optax.sgd(0.1), rng=jax.random.PRNGKey(1), frozen=frozen)
    step = make_train_step(
        toy.loss_fn, mini_batches=2, prepare_fn=prepare, probe_fn=probe, donate=False
    )
    new, metrics = step(state, bad, probe=True)
    assert metrics["guard/skipped"] == 1 and metrics["guard/nonfinite_streak"] == 1
    assert float(metrics["frozen_sum"]) == 3.0 and float(metrics["probe/moved"]) > 0
    assert "probe/moved" not in step(state, bad)[1]
    one = make_train_step(toy.loss_fn, donate=False)  # the kept update alone: mini-batch 0
    want, _ = one(state, jax.tree.map(lambda x: x[0::2], bad))
    for a, b in zip(_leaves(new.params), _leaves(want.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(new.frozen["w"], frozen["w"])


def test_nonfinite_gradient_with_finite_loss():
    def loss_fn(model, batch, key, controls):
        loss, metrics = toy.loss_fn(model, batch, key, controls)
        kernel = model.out.kernel[...]
        return loss + jnp.sqrt(jnp.abs(kernel - kernel)).sum(), metrics  # value 0, grad NaN

    state = _state(optax.sgd(0.1))
    params = _leaves(state.params)
    state, metrics = make_train_step(loss_fn)(state, toy.batch(0))
    assert np.isfinite(metrics["loss"]) and metrics["guard/skipped"] == 1
    for a, b in zip(_leaves(state.params), params, strict=True):
        np.testing.assert_array_equal(a, b)
    host = {k: float(v) for k, v in metrics.items()}
    with pytest.raises(NonFiniteError, match="loss was finite but the gradient"):
        check_guard(host, step=1, max_nonfinite=1)


def test_controller_reads_loss_metric_and_feeds_the_loss():
    coef = AdaptiveEntropyCoef(target=5.0, lr=0.1, init_coef=0.01)
    state = _state(optax.sgd(0.1), controllers={"coef": coef})
    step = make_train_step(toy.loss_fn)
    cstate = coef.init()
    for i in range(3):
        state, metrics = step(state, toy.batch(i))
        np.testing.assert_allclose(
            metrics["controls/entropy_coef"], coef.controls(cstate)["entropy_coef"], rtol=1e-6
        )
        cstate = coef.update(cstate, metrics["entropy"])
    np.testing.assert_allclose(state.controls["coef"].log_coef, cstate.log_coef, rtol=1e-6)

    missing = AdaptiveEntropyCoef(target=1.0, metric="policy/entropy")
    with pytest.raises(KeyError, match="policy/entropy"):
        state = _state(optax.sgd(0.1), controllers={"c": missing})
        make_train_step(toy.loss_fn)(state, toy.batch(0))


def test_sam_through_the_step_uses_value_and_grad_fn():
    lr, rho = 0.1, 0.05
    state = _state(sam(optax.sgd(lr), rho=rho), toy.plain_model_fn)
    graphdef, params, ms = state.graphdef, state.params, state.model_state
    batch = {k: jnp.asarray(v) for k, v in toy.batch(0).items()}
    grad = jax.grad(lambda p: _reference_loss(graphdef, p, ms, batch)[0])
    g = grad(params)
    scale = rho / optax.global_norm(g)
    g2 = grad(jax.tree.map(lambda w, d: w + scale * d, params, g))
    expected = jax.tree.map(lambda w, d: w - lr * d, params, g2)
    state, metrics = make_train_step(toy.loss_fn)(state, batch)
    for a, b in zip(_leaves(state.params), _leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert "optim/sam_perturbed_loss" in metrics


def test_safe_step_through_the_step_uses_logits_fn():
    tx = optax.chain(optax.sgd(1e3), safe_step())
    state = _state(tx, toy.plain_model_fn)
    step = make_train_step(toy.loss_fn, logits_fn=lambda model, batch: model(batch["x"]))
    state, metrics = step(state, toy.batch(0))
    assert metrics["optim/safe_scale"] < 1.0
    np.testing.assert_allclose(metrics["optim/update_norm"], metrics["optim/safe_rho"], rtol=1e-4)


def test_bad_loss_metrics_are_named():
    def reserved(model, batch, key, controls):
        loss, _ = toy.loss_fn(model, batch, key, controls)
        return loss, {"optim/lr": 1.0}

    def vector(model, batch, key, controls):
        loss, _ = toy.loss_fn(model, batch, key, controls)
        return loss, {"per_row": jnp.ones(3)}

    with pytest.raises(ValueError, match="optim/lr"):
        make_train_step(reserved)(_state(optax.sgd(0.1)), toy.batch(0))
    with pytest.raises(ValueError, match="per_row"):
        make_train_step(vector)(_state(optax.sgd(0.1)), toy.batch(0))
    with pytest.raises(TypeError, match="PRNGKey"):
        TrainState.create(toy.model_fn(nnx.Rngs(0)), optax.sgd(0.1), rng=jax.random.key(0))


def _policy_loss(model, batch, key, controls):
    """A REINFORCE loss on the tiny Llama with every diagnostic the step can carry."""
    del key, controls
    tokens, adv = batch["tokens"], batch["advantages"]
    out = model(tokens[:, :-1], return_attention_entropy=True)
    logp_all = jax.nn.log_softmax(out.logits)
    logp = jnp.take_along_axis(logp_all, tokens[:, 1:, None], axis=-1)[..., 0]
    mask = jnp.ones(logp.shape, bool)
    metrics = {
        "entropy": shannon_entropy(out.logits).mean(),
        "dynamics/predicted_dH": batch_predicted_entropy_change(logp, adv[:, None], mask),
        "attention/entropy": out.attention_entropy.mean(),
    }
    return -(adv[:, None] * logp).mean(), metrics


def test_diagnostics_are_computed_in_the_one_donating_compiled_step():
    model = tiny_lm.model_fn(nnx.Rngs(0))
    state = TrainState.create(model, optax.adam(1e-3), rng=jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {
        "tokens": jnp.asarray(rng.integers(0, tiny_lm.VOCAB, (4, 9)), jnp.int32),
        "advantages": jnp.asarray(rng.normal(size=4), jnp.float32),
    }
    # references: the same diagnostics evaluated eagerly on the pre-step parameters
    _, expected = _policy_loss(state.model(), batch, None, {})
    expected = {k: float(v) for k, v in expected.items()}
    old_params = state.params
    traces = []  # the loss is traced once per compiled program

    def traced_loss(*args):
        traces.append(1)
        return _policy_loss(*args)

    step = make_train_step(traced_loss)
    state, metrics = step(state, batch)
    for name, value in expected.items():
        np.testing.assert_allclose(float(metrics[name]), value, rtol=1e-5, atol=1e-6)
    assert all(x.is_deleted() for x in jax.tree.leaves(old_params))  # the old state was donated
    state, _ = step(state, batch)
    assert len(traces) == 1  # one compiled program for loss, grads, update, diagnostics
