"""EAST in the RL rollout stage (``rollout.steering``): the probe, the direction it gives, the
rows it steers, their token budget and old log-probs, and the config's refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix import rl
from entropix.models import residual_activations
from entropix.rl.steering import PROBE_STREAM
from entropix.tasks.codecs import encode_prompts
from entropix.train import init_state
from tests.rl import tiny

ROLLOUT = {"prompts": 16, "group_size": 4}  # 16 probe replies: 48 states for the direction


def _plan(alpha=None, **rollout):
    if alpha is not None:
        rollout["steering"] = {"name": "east", "config": {"alpha": alpha}}
    return rl.build(tiny.config(rollout={**ROLLOUT, **rollout}), task=tiny.EvenSum(seed=0))


@pytest.fixture(scope="module")
def state():
    plan = _plan()
    return init_state(plan.policy.model_fn, plan.optimizer, plan.mesh, seed=0)[2]()


def _probe(plan, state):
    """The probe of step 0, drawn here the way the module docstring says."""
    rollouts = plan.rollouts
    problems = plan.task.train_problems(0, plan.config.rollout.prompts)
    prompt, mask = encode_prompts(rollouts.codec, problems, rollouts.layout)
    key = jax.random.fold_in(jax.random.split(rollouts.key(0), 1)[0], PROBE_STREAM)
    return rollouts.generate_ids(state.model(), prompt, mask, key)


def _token_mean(entropy, mask):
    mask = np.asarray(mask, np.float64)
    return float((np.asarray(entropy, np.float64) * mask).sum() / mask.sum())


def test_alpha_zero_samples_the_unsteered_rows_and_counts_the_probe(state):
    plain, steered = _plan().rollouts(0, state), _plan(alpha=0.0).rollouts(0, state)
    for key in ("response", "response_mask", "rollout_logp", "rollout_entropy", "rewards"):
        np.testing.assert_allclose(np.asarray(steered[key]), np.asarray(plain[key]), atol=1e-6)
    probe = _probe(_plan(alpha=0.0), state)
    probe_tokens = np.asarray(steered["probe_tokens"])
    assert probe_tokens.sum() == pytest.approx(probe.mask.sum())
    np.testing.assert_allclose(
        np.asarray(steered["generated"]), np.asarray(plain["generated"]) + probe_tokens
    )
    mean = np.asarray(steered["probe_entropy"]).sum() / probe_tokens.sum()
    assert mean == pytest.approx(_token_mean(probe.entropy, probe.mask), rel=1e-5)


def test_direction_is_the_difference_of_means_of_the_probe_states(state):
    plan = _plan(alpha=1.0)
    probe = _probe(plan, state)
    model = state.model()
    steered, _ = plan.rollouts.steering.steer(model, probe, 0.5, plan.rollouts.on_mesh, np.asarray)
    ids = jnp.concatenate([probe.prompt_tokens, probe.tokens], axis=1)
    attend = jnp.concatenate([probe.prompt_mask, jnp.ones(probe.tokens.shape, bool)], axis=1)
    h = np.asarray(residual_activations(model, ids, attend, layer=0), np.float64)
    p = probe.prompt_tokens.shape[1]
    states, entropy, mask = [], np.asarray(probe.entropy, np.float64), np.asarray(probe.mask)
    for r, t in zip(*np.nonzero(mask), strict=True):
        states.append(h[r, p - 1 + t])  # the state before response token t chose it
    states, chosen = np.stack(states), entropy[mask]
    high = chosen > np.median(chosen)
    want = states[high].mean(axis=0) - states[~high].mean(axis=0)
    np.testing.assert_allclose(np.asarray(steered.vector.value), want, rtol=1e-4, atol=1e-5)


def test_entropy_shift_is_the_steered_minus_the_unsteered_entropy_at_the_probe_states(state):
    shift = {}
    for alpha in (-0.5, 0.0, 0.5):
        plan = _plan(alpha=alpha)
        batch = plan.rollouts(0, state)
        probe = _probe(plan, state)
        steered, _ = plan.rollouts.steering.steer(
            state.model(), probe, 0.5, plan.rollouts.on_mesh, np.asarray
        )
        ids = jnp.concatenate([probe.prompt_tokens, probe.tokens], axis=1)
        attend = jnp.concatenate([probe.prompt_mask, jnp.ones(probe.tokens.shape, bool)], 1)
        p = probe.prompt_tokens.shape[1]
        logits = np.asarray(steered(ids, attention_mask=attend).logits, np.float64)[:, p - 1 : -1]
        z = logits / 0.5
        logp = z - z.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        want = _token_mean(-(np.exp(logp) * logp).sum(-1), probe.mask)
        tokens = np.asarray(batch["probe_tokens"]).sum()
        assert np.asarray(batch["probe_steered_entropy"]).sum() / tokens == pytest.approx(
            want, rel=1e-4
        )
        shift[alpha] = want - _token_mean(probe.entropy, probe.mask)
    assert shift[0.0] == pytest.approx(0.0, abs=1e-5)
    assert shift[-0.5] < -0.05 and shift[0.5] > 0.05, shift


def test_the_steered_policys_logprobs_are_the_old_logprobs(state):
    plan = _plan(alpha=2.0)
    batch = plan.rollouts(0, state)
    controls = {"step": jnp.int32(0)}
    prepared, metrics = plan.update.prepare(
        state.model(), {}, batch, jax.random.PRNGKey(0), controls
    )
    np.testing.assert_array_equal(
        np.asarray(prepared["old_logp"]), np.asarray(batch["rollout_logp"])
    )
    assert {"steering/probe_entropy", "steering/entropy_shift"} <= set(metrics)
    _, loss_metrics = plan.update.loss(state.model(), prepared, jax.random.PRNGKey(1), controls)
    assert float(loss_metrics["rollout/logp_gap"]) > 1e-3  # pi and the steered mu differ


@pytest.mark.parametrize(
    "steering, message",
    [
        ({"name": "east", "config": {"layer": 1}}, "the policy has 1 blocks"),
        ({"name": "east", "config": {"quantile": 1.5}}, "quantile must lie in"),
        ({"name": "ppo_clip"}, "of kind .objective., not a steering one"),
        ({"name": "east", "alpha": 1.0}, "unknown key 'rollout.steering.alpha'"),
    ],
)
def test_build_refuses_a_bad_steering_config(steering, message):
    with pytest.raises(ValueError, match=message):
        rl.build(tiny.config(rollout={"steering": steering}), task=tiny.EvenSum(seed=0))
