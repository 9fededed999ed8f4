"""Entropic activation steering (EAST) in the rollout stage: each step's rows are sampled from
the policy steered along its own entropy direction.

With ``rollout.steering: {name: east, config: {layer: l, alpha: a, quantile: q}}`` the rollout
stage of step t

1. samples one unsteered *probe* response per prompt from the current policy (key
   ``fold_in(step key, 1)``; the rows keep the step key, so alpha = 0 samples exactly the rows of
   an unsteered run),
2. reads the residual stream after block l at the states that chose each probe token (one
   forward over ``[prompt | response]``: the state at position j predicts token j + 1) and the
   next-token entropy there (the generator's, at the rollout temperature),
3. takes ``v = entropy_direction(states, entropies, q)`` (:func:`entropix.models.east`) and samples
   the step's rows with the configured strategy from ``SteeredLlama(policy, v, l, a)``.

The direction is refreshed every step from the policy being trained, so it follows the policy
(and a resumed run recomputes exactly what it used); the held-out evaluation scores the trained
policy itself, unsteered. Our choice, since the paper ("Controlling Large Language Model Agents
with Entropic Activation Steering", Rahn, D'Oro and Bellemare, 2024) steers a fixed agent at
inference and trains nothing: the steered policy mu is the behaviour policy, its log-probs
(``rollout_logp``) are the PPO old log-probs, so the ratio pi / mu corrects the update for the
steering and the objective's clip bounds it.

Reported per step: ``steering/probe_entropy`` (token-mean next-token entropy of the unsteered
policy at the probe's states) and ``steering/entropy_shift`` (the steered policy's minus the
unsteered one's at those same states: the steering's measured effect on action entropy, one
more forward over the probe), beside ``entropy`` (the steered rows'). The probe's tokens count
in ``rollout/tokens`` (each prompt's probe tokens spread evenly over its rows).
"""

import dataclasses
from collections.abc import Callable, Mapping

import jax
import numpy as np
from flax import nnx

from entropix.config import MethodSpec
from entropix.losses.registry import get
from entropix.models.steering import SteeringConfig, residual_activations
from entropix.rl.update import PolicyForward
from entropix.rollout.generate import Rollout

PROBE_STREAM = 1  # fold_in(step key, 1): the probe's samples, apart from the rows'


@nnx.jit(static_argnames="layer")
def _states(model: nnx.Module, ids: jax.Array, mask: jax.Array, layer: int) -> jax.Array:
    return residual_activations(model, ids, mask, layer)


@nnx.jit(static_argnames="forward")
def _entropy(
    model: nnx.Module, prompt: jax.Array, prompt_mask: jax.Array, response: jax.Array, forward
) -> jax.Array:
    """Next-token entropy [R, N] of ``model`` at the states that chose the response tokens."""
    return forward(model, prompt, prompt_mask, response)[1]


@dataclasses.dataclass(frozen=True)
class Steering:
    """The rollout stage's EAST settings and the two things it does with them: read the
    entropy direction from a probe, and wrap the policy along it (see the module docstring)."""

    name: str
    config: SteeringConfig

    def check(self, num_layers: int) -> None:
        """Refuse, with one line, a block outside the policy or a quantile outside [0, 1].

        Args:
            num_layers: the policy's number of blocks.
        """
        layer, q = self.config.layer, self.config.quantile
        if not 0 <= layer < num_layers:
            raise ValueError(
                f"rollout.steering.config.layer={layer}: the policy has {num_layers} blocks "
                f"(0 to {num_layers - 1})"
            )
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"rollout.steering.config.quantile must lie in [0, 1]; got {q}")

    def steer(
        self,
        model: nnx.Module,
        probe: Rollout,
        temperature: float,
        to_device: Callable[[np.ndarray], jax.Array],
        to_host: Callable[[jax.Array], np.ndarray],
    ) -> tuple[nnx.Module, np.ndarray]:
        """``model`` steered along the entropy direction of ``probe``'s states, and the steered
        model's next-token entropy at those same states (the steering's measured effect).

        Args:
            model: the current policy (a :class:`~entropix.models.Llama`).
            probe: host arrays of the unsteered probe responses (``prompt_tokens`` [R, L],
                ``prompt_mask``, ``tokens`` / ``mask`` / ``entropy`` [R, N]).
            temperature: the rollout temperature (the entropies are of softmax(z / T)).
            to_device: places a host batch [R', ...] on the mesh (R' padded as it needs).
            to_host: brings a global array back to the host.

        Returns:
            (steered model, float32 [R, N] its entropy at the probe's states): the registered
            steering method's model (``east``: a ``SteeredLlama``).
        """
        rows, p = probe.prompt_tokens.shape
        ids = np.concatenate([probe.prompt_tokens, probe.tokens], axis=1)
        mask = np.concatenate([probe.prompt_mask, np.ones(probe.tokens.shape, bool)], axis=1)
        states = to_host(_states(model, to_device(ids), to_device(mask), self.config.layer))
        chose = states[:rows, p - 1 : -1]  # the state at position j chooses token j + 1
        taken = np.asarray(probe.mask, bool)
        steered = get(self.name).factory(
            model, chose[taken], np.asarray(probe.entropy)[taken], self.config
        )
        placed = (to_device(x) for x in (probe.prompt_tokens, probe.prompt_mask, probe.tokens))
        entropy = _entropy(steered, *placed, PolicyForward(float(temperature)))
        return steered, np.asarray(to_host(entropy)[:rows], np.float32)


def build_steering(spec: MethodSpec | None) -> Steering | None:
    """The :class:`Steering` of ``rollout.steering`` (None: no steering).

    Args:
        spec: the config's ``rollout.steering`` (a registered method of kind ``steering`` with
            only its ``config`` given; the states and entropies come from the probe).

    Returns:
        The settings, or None when ``spec`` is None.

    Raises:
        ValueError: the method is not a steering one, or arguments other than ``config``.
    """
    if spec is None:
        return None
    kind = get(spec.name).kind
    if kind != "steering":
        raise ValueError(
            f"rollout.steering: {spec.name!r} is a method of kind {kind!r}, not a steering one"
        )
    extra = sorted(set(spec.args) - {"config"})
    if extra:
        raise ValueError(
            f"rollout.steering: give only `config` (layer, alpha, quantile); {extra} come from "
            "each step's probe"
        )
    config = spec.args.get("config", SteeringConfig())
    if isinstance(config, Mapping):
        config = SteeringConfig(**config)
    return Steering(spec.name, config)


def spread_probe(probe: Rollout, steered_entropy: np.ndarray, prompt: np.ndarray) -> dict:
    """Per-row fields of the steered rows from the probe of their prompts: each prompt's probe
    sums spread evenly over its rows, so batch sums are the probe's sums.

    Args:
        probe: host arrays of the probe, one response per prompt (``mask``, ``entropy``
            [P, N]: the unsteered policy's).
        steered_entropy: [P, N] the steered policy's entropy at the probe's states.
        prompt: int [R], the prompt index of each row.

    Returns:
        float32 [R] ``probe_tokens`` (the prompt's probe tokens / its rows),
        ``probe_entropy`` and ``probe_steered_entropy`` (the prompt's unsteered and steered
        entropy summed over its probe tokens / its rows); token means are
        ``sum(probe_entropy) / sum(probe_tokens)``.
    """
    mask = np.asarray(probe.mask, np.float32)
    share = 1.0 / np.maximum(np.bincount(prompt, minlength=len(mask)), 1)
    sums = {
        "probe_tokens": mask.sum(axis=1),
        "probe_entropy": (np.asarray(probe.entropy, np.float32) * mask).sum(axis=1),
        "probe_steered_entropy": (np.asarray(steered_entropy, np.float32) * mask).sum(axis=1),
    }
    return {k: (v * share)[prompt].astype(np.float32) for k, v in sums.items()}
