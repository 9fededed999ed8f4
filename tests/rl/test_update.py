"""The update stage against independent computations: the forward's log-probs, accumulation
and mini-batches against one big batch / sequential updates, the dynamics probe against
finite differences, the reference policy, and AEPO's sampled stream."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from entropix import dynamics as ex_dynamics
from entropix import rl
from entropix.rollout import generate, make_sampler
from entropix.tasks.codecs import encode_prompts
from entropix.train import init_state, make_train_step, read_metrics, split_rows
from tests.rl import tiny


def _setup(*overrides, optimizer=None, **sections):
    """The plan and a state factory (``optimizer`` in place of the plan's AdamW: equivalence
    tests use SGD, whose update is linear in the gradient, where Adam's first step divides
    gradients of ~1e-8 by their own size and turns rounding into visible differences)."""
    plan = rl.build(tiny.config(*overrides, **sections), task=tiny.EvenSum(seed=0))
    _, _, create = init_state(
        plan.policy.model_fn,
        optimizer or plan.optimizer,
        plan.mesh,
        seed=0,
        controllers=plan.controllers,
        frozen_fn=(lambda p: {"reference": p}) if plan.reference else None,
    )
    return plan, create


def _ragged(batch, seed=0):
    """The rollout batch with response lengths cut at random (1..N tokens)."""
    mask = np.asarray(batch["response_mask"])
    lengths = np.random.default_rng(seed).integers(1, mask.shape[1] + 1, mask.shape[0])
    cut = np.arange(mask.shape[1])[None, :] < lengths[:, None]
    return {**batch, "response_mask": jnp.asarray(mask & cut)}


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _close(a, b, atol=1e-5):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


def test_forward_matches_the_models_logits_fused_or_not():
    plan, create = _setup()
    state = create()
    batch = plan.rollouts(0, state)
    model = state.model()
    ids = jnp.concatenate([batch["prompt"], batch["response"]], axis=1)
    mask = jnp.concatenate([batch["prompt_mask"], jnp.ones_like(batch["response_mask"])], 1)
    p, t = batch["prompt"].shape[1], plan.config.rollout.temperature
    logits = np.asarray(model(ids, attention_mask=mask).logits, np.float64)[:, p - 1 : -1] / t
    logp_all = logits - np.log(
        np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)
    )
    logp_all -= logits.max(-1, keepdims=True)
    want_logp = np.take_along_axis(logp_all, np.asarray(batch["response"])[..., None], -1)[..., 0]
    want_entropy = -(np.exp(logp_all) * logp_all).sum(-1)
    for full in (False, True):
        forward = rl.PolicyForward(t, full_logits=full, chunk=16)
        logp, entropy, z = forward(model, batch["prompt"], batch["prompt_mask"], batch["response"])
        np.testing.assert_allclose(logp, want_logp, atol=1e-5)
        np.testing.assert_allclose(entropy, want_entropy, atol=1e-5)
        assert (z is not None) == full
    # the generator scored the same tokens with the same numbers (cache vs full forward)
    np.testing.assert_allclose(batch["rollout_logp"], want_logp * batch["response_mask"], atol=1e-5)


@pytest.mark.parametrize("aggregate", ["token-mean", "seq-mean-token-mean"])
def test_accumulation_equals_one_big_batch(aggregate):
    plan, create = _setup(f"loss.aggregate={aggregate}", optimizer=optax.sgd(0.1))
    batch = _ragged(plan.rollouts(0, create()))
    results = []
    for micro in (1, 4):
        step = make_train_step(
            plan.update.loss,
            micro_batches=micro,
            prepare_fn=plan.update.prepare,
            weight_fn=plan.update.weight,
        )
        state, metrics = step(create(), batch)
        results.append((state.params, metrics))
    (p1, m1), (p4, m4) = results
    _close(p1, p4)
    for key in ("loss", "pg/loss", "entropy", "reward", "optim/grad_norm"):
        np.testing.assert_allclose(m4[key], m1[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_epochs_and_mini_batches_are_sequential_updates_on_strided_parts():
    plan, create = _setup("update.mini_batches=2", "update.epochs=2", optimizer=optax.sgd(0.1))
    assert plan.update.old_logp_forward
    state = create()
    batch = _ragged(plan.rollouts(0, state))
    controls = {"step": state.step}
    prepared, _ = jax.jit(plan.update.prepare)(state.model(), state.frozen, batch, None, controls)
    # the old log-probs are the start policy's: the forward's own numbers
    forward = plan.update.forward(
        state.model(), batch["prompt"], batch["prompt_mask"], batch["response"]
    )
    np.testing.assert_allclose(prepared["old_logp"], forward[0], rtol=1e-5, atol=1e-6)
    halves = split_rows(prepared, 2)
    plain = make_train_step(plan.update.loss, weight_fn=plan.update.weight)
    manual = create()
    for part in (0, 1, 0, 1):
        manual, _ = plain(manual, jax.tree.map(lambda x, part=part: x[part], halves))
    step = make_train_step(
        plan.update.loss,
        mini_batches=2,
        epochs=2,
        prepare_fn=plan.update.prepare,
        weight_fn=plan.update.weight,
    )
    fused, metrics = step(create(), batch)
    _close(fused.params, manual.params)
    _close(fused.opt_state, manual.opt_state)
    assert int(fused.step) == 1 and metrics["pg/ratio_mean"] != 1.0


def test_on_policy_single_update_has_ratio_one_and_no_old_forward():
    plan, create = _setup()
    assert not plan.update.old_logp_forward
    step = make_train_step(plan.update.loss, prepare_fn=plan.update.prepare)
    _, metrics = step(create(), plan.rollouts(0, create()))
    assert float(metrics["pg/ratio_mean"]) == 1.0 and float(metrics["pg/clip_fraction"]) == 0.0


def test_probe_prediction_is_the_first_order_change_along_the_update():
    plan, create = _setup("optim.lr=1e-4", "update.micro_batches=2")
    state = create()
    batch = plan.rollouts(0, state)
    step = make_train_step(
        plan.update.loss,
        micro_batches=2,
        prepare_fn=plan.update.prepare,
        probe_fn=plan.update.probe,
    )
    new, metrics = step(create(), batch, probe=True)
    assert "dH/predicted" not in step(create(), batch)[1]  # only probed steps pay for it
    graphdef, p0, rest = nnx.split(state.model(), nnx.Param, ...)
    p1 = new.params
    mask = batch["response_mask"].astype(jnp.float32)

    def forward(params):  # (log pi(y_t), H_t) [B, N]
        model = nnx.merge(graphdef, params, rest)
        ids = (batch["prompt"], batch["prompt_mask"], batch["response"])
        return plan.update.forward(model, *ids)[:2]

    def entropy(params):
        return float(jnp.sum(forward(params)[1] * mask) / jnp.sum(mask))

    shifted = lambda s: jax.tree.map(lambda a, b: a + s * (b - a), p0, p1)  # noqa: E731
    central = (entropy(shifted(1.0)) - entropy(shifted(-1.0))) / 2.0
    measured = entropy(p1) - entropy(p0)
    assert abs(float(metrics["dH/predicted"])) > 1e-6
    np.testing.assert_allclose(metrics["dH/predicted"], central, rtol=1e-2)
    np.testing.assert_allclose(metrics["dH/measured"], measured, rtol=1e-3, atol=1e-7)
    moved = np.abs(np.asarray(forward(p1)[0] - forward(p0)[0]))[np.asarray(mask) > 0]
    np.testing.assert_allclose(metrics["dlogp/max"], moved.max(), rtol=1e-3)
    np.testing.assert_allclose(metrics["dlogp/mean"], moved.mean(), rtol=1e-3)
    # the logit-space law with the actual first-order logit change is the same first order
    np.testing.assert_allclose(metrics["dH/logit_law"], metrics["dH/predicted"], rtol=1e-4)
    for groups in (ex_dynamics.QUADRANTS, ex_dynamics.FORKING):  # each partition sums to it
        parts = sum(float(metrics[f"dH/pred/{g}"]) for g in groups)
        np.testing.assert_allclose(parts, metrics["dH/predicted"], rtol=1e-5)


def test_probe_second_order_is_the_second_difference_along_the_update():
    """With dynamics.second_order the probe adds d^2/de^2 H(theta + e delta) / 2 to the first
    order: it matches the central second difference of H along delta, and what is left of the
    measured change is third order (far below the first order's miss)."""
    plan, create = _setup("optim.lr=1e-4", "dynamics.second_order=true")
    state = create()
    batch = plan.rollouts(0, state)
    step = make_train_step(
        plan.update.loss, prepare_fn=plan.update.prepare, probe_fn=plan.update.probe
    )
    new, metrics = step(create(), batch, probe=True)
    graphdef, p0, rest = nnx.split(state.model(), nnx.Param, ...)
    mask = batch["response_mask"].astype(jnp.float32)

    def entropy(s):  # H(theta + s delta) on the batch
        params = jax.tree.map(lambda a, b: a + s * (b - a), p0, new.params)
        ids = (batch["prompt"], batch["prompt_mask"], batch["response"])
        h = plan.update.forward(nnx.merge(graphdef, params, rest), *ids)[1]
        return float(jnp.sum(h * mask) / jnp.sum(mask))

    h = {s: entropy(s) for s in (-1.0, 0.0, 1.0)}
    first, second = float(metrics["dH/predicted"]), float(metrics["dH/second_order"])
    np.testing.assert_allclose(first, (h[1.0] - h[-1.0]) / 2, rtol=1e-2)
    np.testing.assert_allclose(2 * (second - first), h[1.0] - 2 * h[0.0] + h[-1.0], rtol=1e-2)
    measured = float(metrics["dH/measured"])
    assert abs(second - first) > 1e-5  # the curvature term is not rounding
    assert abs(measured - second) < 0.1 * abs(measured - first)


def test_probe_row_stride_measures_the_strided_rows():
    plan, create = _setup("dynamics.row_stride=2", "dynamics.position_bins=2")
    state = create()
    prepared, _ = plan.update.prepare(state.model(), {}, plan.rollouts(0, state), None, {})
    graphdef, p0, rest = nnx.split(state.model(), nnx.Param, ...)
    noise = jax.tree.map(lambda x: 1e-3 * jnp.cos(jnp.arange(x.size).reshape(x.shape)), p0)
    after = nnx.merge(graphdef, jax.tree.map(jnp.add, p0, noise), rest)
    # the same as probing every row of a batch made of the even rows
    full = plan.update.with_dynamics(dataclasses.replace(plan.update.dynamics, row_stride=1))
    even = jax.tree.map(lambda x: x[::2], prepared)
    got = jax.jit(plan.update.probe)(state.model(), after, prepared, None, {})
    want = jax.jit(full.probe)(state.model(), after, even, None, {})
    assert set(got) == set(want) and "entropy/position/1" in got
    assert "entropy/position/2" not in got
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-7, err_msg=key)


def _start_params(plan):
    model = plan.policy.model_fn(nnx.Rngs(jax.random.fold_in(jax.random.PRNGKey(0), 0)))
    return nnx.split(model, nnx.Param, ...)[1]


def test_reference_policy_is_the_frozen_start_state(tmp_path):
    config = tiny.config(loss={"terms": [{"name": "ppo_clip"}, {"name": "kl_ref", "coef": 0.1}]})
    plan = rl.build(config, task=tiny.EvenSum(seed=0))
    assert plan.reference and not plan.update.forward.full_logits
    result = rl.run(plan, tmp_path)
    start = _start_params(plan)
    _close(result.state.frozen["reference"], start, atol=0)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(_leaves(result.state.params), _leaves(start), strict=True)
    )
    first, second = read_metrics(tmp_path)
    assert abs(first["kl_ref/loss"]) < 1e-7 < second["kl_ref/loss"]  # KL 0 until the policy moves


def test_aepo_term_is_evaluated_on_responses_sampled_at_the_controllers_temperature():
    sections = {
        "loss": {"terms": [{"name": "ppo_clip"}, {"name": "aepo", "coef": 0.1}]},
        "controllers": [{"name": "aepo_temperature", "target": 5.0, "t_high": 1.5}],
    }
    plan, create = _setup(**sections)
    assert list(plan.streams) == ["aepo_temperature"] and [t.name for t in plan.main.terms] == [
        "pg"
    ]
    step = make_train_step(plan.update.loss, prepare_fn=plan.update.prepare)
    state, metrics = step(create(), plan.rollouts(0, create()))
    assert float(metrics["controls/aepo_temperature"]) == 1.0  # no entropy observed yet
    assert float(state.control_values()["aepo_temperature"]) == 1.5  # entropy below target 5
    batch = plan.rollouts(1, state)
    stream = batch["streams"]["aepo_temperature"]
    problems = [p for p in plan.task.train_problems(1, 2) for _ in range(4)]
    prompt, prompt_mask = encode_prompts(plan.policy.codec, problems, plan.policy.layout)
    key = jax.random.split(plan.rollouts.key(1), 2)[1]
    want = generate(
        state.model(),
        jnp.asarray(prompt),
        jnp.asarray(prompt_mask),
        key=key,
        max_new_tokens=plan.policy.layout.new_tokens,
        sampler=make_sampler("temperature", temperature=1.5),
        eos_ids=plan.policy.codec.eos_id,
        pad_id=plan.policy.codec.pad_id,
    )
    np.testing.assert_array_equal(stream["response"], want.tokens)
    assert not np.array_equal(stream["response"], batch["response"])
    _, metrics = step(state, batch)
    assert np.isfinite(metrics["aepo/loss"]) and "aepo_temperature/reward" in metrics
