"""The update stage: the policy forward and the hooks of the compiled train step.

Batch layout (what :class:`entropix.rl.rollout.Rollouts` returns, every leaf ``[B, ...]``):
``prompt`` / ``prompt_mask`` [B, P], ``response`` / ``response_mask`` [B, N], ``rewards``,
``correct``, ``parsed``, ``ended`` [B], ``group_ids`` [B], ``generated`` [B] (tokens the
rollout strategy generated for the row), ``answers`` [B] (label-free answer ids, when a shaper
reads them), ``probe_tokens`` / ``probe_entropy`` / ``probe_steered_entropy`` [B] (with
``rollout.steering``: the probe's sums, ``entropix.rl.steering``), ``rollout_logp`` /
``rollout_entropy`` / ``answer_mask`` [B, N], and ``streams[control]`` (prompt, response,
masks and rewards of a batch sampled at ``controls[control]``) for terms declaring
``sampled_at``, and ``replay`` (prompt, response, masks, behaviour ``old_logp`` [B, N] and
``advantages`` [B] of trajectories replayed from the SPEAR buffer, ``entropix.rl.replay``)
when a loss term is a replay term.

* :meth:`Update.prepare` (once per step, before any update): reward and advantage shapers
  (``entropix.rl.advantages``), the old policy's log-probs when the step makes several
  updates, a frozen reference policy's log-probs when a term needs ``ref_logp``, and the
  rollout's metrics: ``entropy`` (token mean over the batch of the sampling policy's entropy,
  as the generator computed it: the policy before this step's updates), ``reward``,
  ``accuracy``, ``response_length``, ``rollout/tokens`` (the tokens the rollout strategy
  generated for the batch), ... These are whole-batch values, whatever the mini- and
  micro-batches.
* :meth:`Update.loss` (``loss_fn(model, batch, key, controls)`` of ``make_train_step``): one
  forward, a :class:`~entropix.losses.PolicyBatch`, ``compose(*terms)``; terms with
  ``sampled_at`` are evaluated on their own sampled batch and added, replay terms (SPEAR) on
  the replayed batch with its stored behaviour log-probs. On-policy with one update
  per batch the old log-probs are the forward's own (``stop_gradient``; ratio exactly 1).
  Its metrics (the terms', ``rollout/logp_gap`` = mean |forward log-prob - generator
  log-prob|, which is ~1e-7 on-policy) are means over micro-batches weighted like the
  gradients (by valid tokens for a token-mean objective) and over the step's updates.
* :meth:`Update.probe` (steps that log dynamics): the measured entropy change of the step,
  dH_meas = H(theta + delta; batch) - H(theta; batch), and its exact first-order prediction
  along the update the optimiser actually made, dH_pred = <grad_theta H(theta; batch), delta>
  (H = token-mean entropy of the batch's sampled positions, delta = parameters after minus
  before the step's updates), from one JVP of the full-logit forward along delta (which also
  gives the first-order logit change dz for the logit-space law) and one forward at
  theta + delta; then the token-group parts and telemetry of
  :func:`entropix.dynamics.dynamics_metrics`. The JVP forms the response positions'
  ``[rows / chunks, N, V]`` logits (and their tangent) on these steps only.
"""

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from entropix.dynamics import dynamics_metrics, predicted_entropy_change
from entropix.entropy import log_softmax, masked_mean, shannon_entropy
from entropix.entropy.fused import token_logprobs_and_entropy
from entropix.losses import Composed, make_policy_batch
from entropix.rl.advantages import AdvantageStage
from entropix.rl.config import DynamicsConfig
from entropix.train import merge_rows, split_rows


@dataclasses.dataclass(frozen=True)
class PolicyForward:
    """Log-probs ``[B, N]`` and entropies ``[B, N]`` of the response tokens under the policy
    softmax(z / temperature), from one forward over ``[prompt | response]``.

    Fused (default): straight from the final hidden states and the unembedding
    (``entropix.entropy.token_logprobs_and_entropy``, chunks of ``chunk`` vocabulary columns);
    no ``[B, N, V]`` logits exist. ``full_logits``: the response positions' logits are formed
    and returned too, for terms that need the whole distribution.
    """

    temperature: float = 1.0
    full_logits: bool = False
    chunk: int = 1024

    def __call__(
        self, model: nnx.Module, prompt: jax.Array, prompt_mask: jax.Array, response: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        p = prompt.shape[1]
        ids = jnp.concatenate([prompt, response], axis=1)
        mask = jnp.concatenate([prompt_mask, jnp.ones(response.shape, bool)], axis=1)
        out = model(ids, attention_mask=mask, return_logits=False)
        hidden = out.hidden[:, p - 1 : -1]
        b, n, d = hidden.shape
        if self.full_logits:
            z = jnp.dot(
                hidden, out.unembed.astype(hidden.dtype), preferred_element_type=jnp.float32
            )
            logits = z / self.temperature
            logp = jnp.take_along_axis(log_softmax(logits), response[..., None], axis=-1)[..., 0]
            return logp, shannon_entropy(logits), logits
        logp, entropy = token_logprobs_and_entropy(
            hidden.reshape(b * n, d),
            out.unembed,
            response.reshape(b * n),
            self.chunk,
            self.temperature,
        )
        return logp.reshape(b, n), entropy.reshape(b, n), None


def _chunked(fn, batch, chunks: int):
    """``fn(part)`` over ``chunks`` strided row parts of ``batch`` (``lax.map``), merged back."""
    if chunks == 1:
        return fn(batch)
    return merge_rows(jax.lax.map(fn, split_rows(batch, chunks, "micro-batches")))


class Update:
    """The hooks of the RL train step (see the module docstring).

    ``main``: the composed loss on the policy batch; ``streams``: {control: composed loss} of
    terms evaluated on batches sampled at ``controls[control]``; ``old_logp_forward``: the step
    makes several updates, so the old log-probs come from a forward before the first;
    ``behaviour_logp``: the rows were sampled from another (steered) policy, whose log-probs
    ``rollout_logp`` are the old log-probs (ratio pi / mu; takes precedence);
    ``reference``: the state holds a frozen reference policy (``frozen["reference"]``);
    ``chunks``: row chunks of the no-gradient forwards (the micro-batch count, for memory);
    ``dynamics``: the probe's settings; ``replay``: the composed loss of the replay terms,
    evaluated on ``batch["replay"]``.
    """

    def __init__(
        self,
        main: Composed,
        streams: dict[str, Composed],
        forward: PolicyForward,
        advantages: AdvantageStage,
        *,
        old_logp_forward: bool,
        reference: bool,
        behaviour_logp: bool = False,
        chunks: int = 1,
        dynamics: DynamicsConfig | None = None,
        replay: Composed | None = None,
    ) -> None:
        self.main, self.streams, self.forward = main, dict(streams), forward
        self.replay = replay
        self.advantages, self.old_logp_forward, self.reference = (
            advantages,
            old_logp_forward,
            reference,
        )
        self.behaviour_logp = behaviour_logp
        self.chunks, self.dynamics = chunks, dynamics or DynamicsConfig()
        self.token_weighted = main.aggregate == "token-mean"

    def with_dynamics(self, dynamics: DynamicsConfig) -> "Update":
        """A copy of these hooks whose probe uses ``dynamics``.

        Args:
            dynamics: the ``dynamics:`` settings of the probe (row stride, thresholds, bins).

        Returns:
            A shallow copy of this ``Update`` with ``dynamics`` replaced.
        """
        other = copy.copy(self)
        other.dynamics = dynamics
        return other

    def _logp(self, model, batch):
        graphdef, state = nnx.split(model)

        def one(part):
            part_model = nnx.merge(graphdef, state)
            return self.forward(part_model, part["prompt"], part["prompt_mask"], part["response"])[
                0
            ]

        keys = ("prompt", "prompt_mask", "response")
        return _chunked(one, {k: batch[k] for k in keys}, self.chunks)

    def prepare(
        self,
        model: nnx.Module,
        frozen: Mapping[str, Any],
        batch: dict[str, Any],
        key: jax.Array,
        controls: Mapping[str, jax.Array],
    ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
        """Shaped rewards, advantages, old / reference log-probs and the rollout's metrics.

        Args:
            model: the policy before the step's updates (no gradient is taken).
            frozen: ``TrainState.frozen`` ({} by default); ``frozen["reference"]`` holds the
                reference policy's parameters when ``reference``.
            batch: the rollout batch (the module docstring's layout, leaves [B, ...]).
            key: the step's prepare key (unused).
            controls: the step's control values (unused).

        Returns:
            (batch, metrics): the batch plus ``advantages`` ([B] or [B, N]),
            ``shaped_rewards`` [B] and, when needed, ``old_logp`` / ``ref_logp`` [B, N]; and
            the rollout's whole-batch scalar metrics (``entropy``, ``reward``, ``accuracy``,
            ``response_length``, ``rollout/tokens``, ...).
        """
        del key, controls
        mask = batch["response_mask"].astype(jnp.float32)
        rewards, advantages = self.advantages(
            {
                "rewards": batch["rewards"],
                "group_ids": batch["group_ids"],
                "mask": mask,
                "entropy": batch["rollout_entropy"],
                "tokens": batch["response"],
                "answer_mask": batch["answer_mask"],
                **({"answers": batch["answers"]} if "answers" in batch else {}),
            }
        )
        batch = {**batch, "advantages": advantages, "shaped_rewards": rewards}
        if self.behaviour_logp:
            batch["old_logp"] = batch["rollout_logp"]
        elif self.old_logp_forward:
            batch["old_logp"] = self._logp(model, batch)
        if self.reference:
            graphdef, _, rest = nnx.split(model, nnx.Param, ...)
            batch["ref_logp"] = self._logp(nnx.merge(graphdef, frozen["reference"], rest), batch)
        token_advantages = jnp.broadcast_to(
            advantages if advantages.ndim == 2 else advantages[:, None], mask.shape
        )
        metrics = {
            "entropy": masked_mean(batch["rollout_entropy"], mask),
            "reward": jnp.mean(batch["rewards"]),
            "accuracy": jnp.mean(batch["correct"]),
            "reward/unparsed": 1.0 - jnp.mean(batch["parsed"]),
            "reward/truncated": 1.0 - jnp.mean(batch["ended"]),
            "response_length": jnp.mean(jnp.sum(mask, axis=1)),
            "advantage/abs_mean": masked_mean(jnp.abs(token_advantages), mask),
            "advantage/zero_fraction": masked_mean(
                (token_advantages == 0).astype(jnp.float32), mask
            ),
        }
        if self.advantages.reward_fns:
            metrics["reward/shaped"] = jnp.mean(rewards)
        if "generated" in batch:
            metrics["rollout/tokens"] = jnp.sum(batch["generated"])
        if "probe_entropy" in batch:
            tokens = jnp.maximum(jnp.sum(batch["probe_tokens"]), 1.0)
            probe = jnp.sum(batch["probe_entropy"]) / tokens
            metrics["steering/probe_entropy"] = probe
            steered = jnp.sum(batch["probe_steered_entropy"]) / tokens
            metrics["steering/entropy_shift"] = steered - probe
        for control, stream in batch.get("streams", {}).items():
            metrics[f"{control}/reward"] = jnp.mean(stream["rewards"])
        if "replay" in batch:
            replayed = jnp.any(batch["replay"]["response_mask"], axis=1)
            metrics["replay/fraction"] = jnp.mean(replayed)
            metrics["replay/advantage"] = masked_mean(batch["replay"]["advantages"], replayed)
        return batch, metrics

    def _policy_batch(self, logp, entropy, logits, mask, advantages, key, controls, **fields):
        return make_policy_batch(
            logp,
            advantages,
            mask,
            entropy=entropy,
            logits=logits,
            key=key,
            controls=controls,
            **fields,
        )

    def loss(
        self,
        model: nnx.Module,
        batch: Mapping[str, Any],
        key: jax.Array,
        controls: Mapping[str, jax.Array],
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``loss_fn(model, batch, key, controls)`` of the train step.

        Args:
            model: the policy being trained (the gradient is taken through it).
            batch: a (micro-)batch of the prepared batch (see :meth:`prepare`).
            key: the micro-batch's PRNG key (stochastic terms; the streams and the replay
                get keys folded from it).
            controls: the control values terms read (``controls["step"]`` and the
                controllers').

        Returns:
            (loss, metrics): the scalar loss (main terms + sampled streams + replay terms)
            and its scalar metrics (the terms', ``loss``, ``rollout/logp_gap``).
        """
        logp, entropy, logits = self.forward(
            model, batch["prompt"], batch["prompt_mask"], batch["response"]
        )
        mask = batch["response_mask"].astype(jnp.float32)
        policy = self._policy_batch(
            logp,
            entropy,
            logits,
            mask,
            batch["advantages"],
            key,
            controls,
            old_logp=batch.get("old_logp"),
            ref_logp=batch.get("ref_logp"),
            group_ids=batch["group_ids"],
            rewards=batch["shaped_rewards"],
        )
        loss, metrics = self.main(policy)
        for index, (control, composed) in enumerate(self.streams.items()):
            stream = batch["streams"][control]
            s_logp, s_entropy, s_logits = self.forward(
                model, stream["prompt"], stream["prompt_mask"], stream["response"]
            )
            rows = s_logp.shape[0]
            s_loss, s_metrics = composed(
                self._policy_batch(
                    s_logp,
                    s_entropy,
                    s_logits,
                    stream["response_mask"].astype(jnp.float32),
                    jnp.zeros((rows,), jnp.float32),
                    jax.random.fold_in(key, index + 1),
                    controls,
                    group_ids=batch["group_ids"],
                    rewards=stream["rewards"],
                )
            )
            loss = loss + s_loss
            metrics.update({k: v for k, v in s_metrics.items() if k != "loss"})
        if self.replay is not None:
            replay = batch["replay"]
            r_logp, r_entropy, r_logits = self.forward(
                model, replay["prompt"], replay["prompt_mask"], replay["response"]
            )
            r_loss, r_metrics = self.replay(
                self._policy_batch(
                    r_logp,
                    r_entropy,
                    r_logits,
                    replay["response_mask"].astype(jnp.float32),
                    replay["advantages"],
                    jax.random.fold_in(key, len(self.streams) + 1),
                    controls,
                    old_logp=replay["old_logp"],
                )
            )
            loss = loss + r_loss
            metrics.update({k: v for k, v in r_metrics.items() if k != "loss"})
        gap = jnp.abs(jax.lax.stop_gradient(logp) - batch["rollout_logp"])
        metrics.update({"loss": loss, "rollout/logp_gap": masked_mean(gap, mask)})
        return loss, metrics

    def weight(self, micro_batch: Mapping[str, Any]) -> jax.Array:
        """Accumulation weight: valid tokens for a token-mean objective, else 1 (a row mean).

        Args:
            micro_batch: a micro-batch of the prepared batch (reads ``response_mask`` [b, N]).

        Returns:
            float32 scalar: the micro-batch's valid response tokens, or 1.
        """
        if self.token_weighted:
            return jnp.sum(micro_batch["response_mask"].astype(jnp.float32))
        return jnp.float32(1.0)

    def _probe_tokens(self, graphdef, rest, p0, p1, delta, part):
        """Per-token values of one row chunk for :func:`entropix.dynamics.dynamics_metrics`:
        one JVP of the full-logit forward at theta along delta (entropies, logits and their
        first-order changes; with ``dynamics.second_order`` the JVP of that JVP along delta,
        which adds each entropy's second derivative d2h) and one forward at theta + delta
        (entropies and sampled log-probs). Both use the non-parameter state of theta
        (``rest``, e.g. sigmaReparam's power-iteration vectors), so dH/measured is the change
        the parameter update alone made, the change <grad_theta H, delta theta> predicts."""
        full = dataclasses.replace(self.forward, full_logits=True)
        ids = (part["prompt"], part["prompt_mask"], part["response"])

        def forward(params):
            return full(nnx.merge(graphdef, params, rest), *ids)  # (logp, entropy, logits)

        def along(params):  # the forward and its first-order change along delta
            return jax.jvp(forward, (params,), (delta,))

        extra = {}
        if self.dynamics.second_order:  # the JVP of the JVP: d^2/de^2 of H(theta + e delta)
            (value, change), (_, change_of_change) = jax.jvp(along, (p0,), (delta,))
            extra["d2h"] = change_of_change[1]  # of the entropies
        else:
            value, change = along(p0)
        (logp, h0, logits), (_, dh, dlogits) = value, change
        logp_after, h1, _ = self.forward(nnx.merge(graphdef, p1, rest), *ids)
        dz = jnp.take_along_axis(dlogits, part["response"][..., None], axis=-1)[..., 0]
        return {
            "h0": h0,
            "h1": h1,
            "dh": dh,
            "law": predicted_entropy_change(logits, dlogits),
            "logp": logp,
            "logp_after": logp_after,
            "dz_sampled": dz,
            **extra,
        }

    def probe(
        self,
        before: nnx.Module,
        after: nnx.Module,
        batch: Mapping[str, Any],
        key: jax.Array,
        controls: Mapping[str, jax.Array],
    ) -> dict[str, jax.Array]:
        """The step's entropy dynamics (``entropix.dynamics.dynamics_metrics``, see the module
        docstring), on rows 0, s, 2s, ... of the batch for ``row_stride`` s.

        Args:
            before: the policy before the step's first update (theta).
            after: the policy after its last update (theta + delta).
            batch: the prepared batch (reads prompts, responses, masks and ``advantages``).
            key: the probe's key (unused).
            controls: the step's control values (unused).

        Returns:
            The scalar metrics of ``entropix.dynamics.dynamics_metrics`` (measured and
            predicted entropy change, their token-group parts, telemetry).
        """
        del key, controls
        graphdef, p0, rest = nnx.split(before, nnx.Param, ...)
        p1 = nnx.split(after, nnx.Param, ...)[1]
        delta = jax.tree.map(jnp.subtract, p1, p0)
        keys = ("prompt", "prompt_mask", "response", "response_mask", "advantages")
        rows = {k: batch[k] for k in keys}
        if self.dynamics.row_stride > 1:
            rows = jax.tree.map(lambda x: x[0], split_rows(rows, self.dynamics.row_stride))
        tokens = _chunked(
            lambda part: self._probe_tokens(graphdef, rest, p0, p1, delta, part),
            rows,
            self.chunks,
        )
        d = self.dynamics
        return dynamics_metrics(
            **tokens,
            advantages=rows["advantages"],
            mask=rows["response_mask"],
            prob_threshold=d.prob_threshold,
            forking_quantile=d.forking_quantile,
            forking_entropy=d.forking_entropy,
            position_bins=d.position_bins,
        )
