"""The advantage stage: reward shapers, then advantage shapers, bound to the rollout by name.

Registered shapers take different inputs (``grpo(rewards, group_ids)``, ``canon(rewards,
group_ids, metric)``, ``gtpo(advantages, tokens, mask, group_ids, entropy)``, ``pear(rewards,
entropy, mask, answer_mask)``, ...). Each parameter without a default is filled from the
rollout by its name; the ones with defaults come from the method spec. Inputs
(B responses, N response tokens):

* ``rewards`` [B]: the task reward (after the reward shapers, in order),
* ``group_ids`` [B]: the prompt each response answers,
* ``mask`` [B, N] float: response tokens up to and including EOS,
* ``entropy`` [B, N]: the sampling policy's token entropy, from the rollout itself,
* ``tokens`` [B, N]: the sampled ids; ``answer_mask`` [B, N]: answer-phase tokens,
* ``metric`` [B]: each response's mean token entropy (CANON's entropy-conditioned metric),
* ``answers`` [B] int: each reply's answer id, extracted without the label (equal ids = equal
  answers, -1 = none; the majority-vote rewards ``ttrl`` / ``evol_rl`` read it),
* ``advantages``: the previous advantage shaper's output (so ``advantage`` lists chain).

A reward shaper without a ``rewards`` parameter is a reward source (it replaces the task
reward, e.g. the label-free majority vote); it must come first in ``loss.rewards``.

The result is ``(rewards [B], advantages [B] or [B, N])``; everything is jit-able and runs
inside the compiled train step.
"""

import functools
import inspect

import jax
import jax.numpy as jnp

from entropix.config import MethodSpec
from entropix.entropy import masked_mean
from entropix.losses import get as get_method

INPUTS = (
    "rewards",
    "group_ids",
    "mask",
    "entropy",
    "tokens",
    "answer_mask",
    "metric",
    "answers",
)


def _required(factory) -> list[str]:
    """Parameters of ``factory`` without a default (the ones bound from the rollout)."""
    return [
        name
        for name, p in inspect.signature(factory).parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _bind(spec: MethodSpec, kind: str, available: set[str], where: str):
    info = get_method(spec.name)
    if info.kind != kind:
        raise ValueError(f"{where}: {spec.name!r} is a {info.kind} method, not a {kind} shaper")
    missing = [name for name in _required(info.factory) if name not in available]
    if missing:
        hint = ""
        if "advantages" in missing:
            hint = f" (it reshapes advantages: list a shaper before it, e.g. [grpo, {spec.name}])"
        raise ValueError(
            f"{where}: {spec.name} needs {missing}, which the advantage stage does not supply "
            f"(it supplies {sorted(available)}){hint}"
        )
    return _required(info.factory), functools.partial(info.factory, **spec.args)


class AdvantageStage:
    """``(inputs) -> (rewards, advantages)`` for the configured reward and advantage shapers."""

    def __init__(self, rewards: tuple[MethodSpec, ...], advantage: tuple[MethodSpec, ...]) -> None:
        if not advantage:
            raise ValueError("loss.advantage: name at least one advantage shaper (e.g. grpo)")
        available = set(INPUTS)
        self.reward_fns = [
            _bind(spec, "reward", available, f"loss.rewards.{i}") for i, spec in enumerate(rewards)
        ]
        for i, (names, _) in enumerate(self.reward_fns[1:], start=1):
            if "rewards" not in names:
                raise ValueError(
                    f"loss.rewards.{i}: {rewards[i].name} replaces the task reward (it takes no "
                    "rewards), so the shapers before it would be lost; list it first"
                )
        self.advantage_fns = []
        for i, spec in enumerate(advantage):
            self.advantage_fns.append(_bind(spec, "advantage", available, f"loss.advantage.{i}"))
            available.add("advantages")
        bound = (*self.reward_fns, *self.advantage_fns)
        self.group_relative = any("group_ids" in names for names, _ in bound)
        self.answers = any("answers" in names for names, _ in bound)

    def __call__(self, inputs: dict) -> tuple[jax.Array, jax.Array]:
        inputs = dict(inputs)
        inputs["metric"] = masked_mean(inputs["entropy"], inputs["mask"], axis=-1)
        for names, fn in self.reward_fns:
            inputs["rewards"] = fn(**{n: inputs[n] for n in names})
        for names, fn in self.advantage_fns:
            inputs["advantages"] = fn(**{n: inputs[n] for n in names})
        return inputs["rewards"], jnp.asarray(inputs["advantages"], jnp.float32)
