"""Every registered RL method runs on the RL trainer from a config (2 GRPO steps, tiny model).

The parametrisation walks the registry, so a method registered later is covered without
editing this file: objective / intervention terms are added to ``ppo_clip`` (or replace it
when they are a clipped policy-gradient objective themselves), selectors restrict it,
advantage shapers replace ``grpo`` (or follow it when they reshape advantages), reward shapers
precede it, rollout strategies sample the batch, steering methods steer the sampling policy.
Controls a term reads come from the registered controller that supplies them.
"""

import inspect

import jax
import numpy as np
import pytest
from flax import nnx

from entropix import rl
from entropix.losses import REGISTRY
from entropix.optim import CONTROLLERS, supplier_of
from entropix.train import read_metrics
from tests.rl import tiny

RL_KINDS = ("objective", "intervention", "selector", "advantage", "reward", "rollout", "steering")
# rollout strategies run with 6 rows per prompt (a multiple of the default trees' rows per root)
ROLLOUT_GROUP = 6
# controllers that cannot be built without a setting (everything else uses its defaults)
REQUIRED_SETTINGS = {"adaptive_entropy_coef": {"target": 1.0}}


def _controllers(term) -> list[dict]:
    names = [supplier_of(c) for c in term.controls if c != "step"]
    assert None not in names, f"{term.name}: a control without a registered controller"
    return [{"name": n, **REQUIRED_SETTINGS.get(n, {})} for n in dict.fromkeys(names)]


def method_sections(name: str) -> dict:
    """The loss / controllers sections that run registry method ``name``."""
    info = REGISTRY[name]
    if info.kind in ("objective", "intervention"):
        term = info.factory()
        terms = [{"name": name}] if term.name == "pg" else [{"name": "ppo_clip"}, {"name": name}]
        return {"loss": {"terms": terms}, "controllers": _controllers(term)}
    if info.kind == "selector":
        return {"loss": {"selector": {"name": name}}}
    if info.kind == "advantage":
        reshapes = "advantages" in inspect.signature(info.factory).parameters
        return {
            "loss": {
                "advantage": [{"name": "grpo"}, {"name": name}] if reshapes else [{"name": name}]
            }
        }
    if info.kind == "rollout":
        return {"rollout": {"strategy": {"name": name}, "group_size": ROLLOUT_GROUP}}
    if info.kind == "steering":
        return {"rollout": {"steering": {"name": name}}}
    return {"loss": {"rewards": [{"name": name}]}}


def test_every_controller_has_settings_for_a_minimal_run():
    for name, info in CONTROLLERS.items():
        controller = info.cls(**REQUIRED_SETTINGS.get(name, {}))
        assert set(info.supplies) == set(controller.controls(controller.init()))


@pytest.mark.parametrize("name", sorted(n for n, i in REGISTRY.items() if i.kind in RL_KINDS))
def test_method_runs_two_grpo_steps(name, tmp_path):
    sections = method_sections(name)
    config = tiny.config(**sections)
    plan = rl.build(config, task=tiny.EvenSum(seed=0))
    result = rl.run(plan, tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["guard/skipped"] == 0 for r in rows), rows
    # rollout/tokens: every row's whole reply when sampled, less when a strategy shares prefixes
    full = [config.rollout.prompts * config.rollout.group_size * r["response_length"] for r in rows]
    tokens = [r["rollout/tokens"] for r in rows]
    if REGISTRY[name].kind == "rollout":
        assert all(0 < t <= f for t, f in zip(tokens, full, strict=True)), (tokens, full)
    elif REGISTRY[name].kind == "steering":  # the rows plus one unsteered probe per prompt
        assert all(t > f for t, f in zip(tokens, full, strict=True)), (tokens, full)
    else:
        assert tokens == pytest.approx(full), (tokens, full)
    start = plan.policy.model_fn(nnx.Rngs(jax.random.fold_in(jax.random.PRNGKey(0), 0)))
    before = jax.tree.leaves(nnx.split(start, nnx.Param, ...)[1])
    after = jax.tree.leaves(result.state.params)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)), name
    if name == "siren":  # the self-anchor: unset at step 1, then the first step's entropy, held
        assert np.isnan(rows[0]["controls/entropy_anchor"]) and rows[0]["siren/loss"] == 0.0
        assert rows[1]["controls/entropy_anchor"] == pytest.approx(rows[0]["siren/entropy"])
