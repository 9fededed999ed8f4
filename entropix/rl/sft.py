"""Supervised warm-up before RL: teach the policy the task's answer format.

Cross-entropy of the canonical answer + EOS after each prompt, token-mean over the answer
tokens, Adam, trained with ``entropix.train.fit`` in its own directory (so it checkpoints and
resumes like any run, and a sweep can share one warm start between methods):

    L = -(1 / sum m) sum_{b, t} m[b, t] log pi(answer[b, t] | prompt_b, answer[b, <t])

``sft.regularizer`` adds a registered term to it, evaluated on the answer tokens (token-mean,
weighted by its coefficient): ``curio_sft`` (``entropix.losses.self_distill``) distills the
model toward its own tempered distribution at high-entropy tokens to keep SFT from collapsing
the entropy the RL stage explores with.
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from entropix.entropy import masked_mean
from entropix.losses import Term, make_policy_batch
from entropix.losses import get as get_method
from entropix.rl.config import SFTConfig
from entropix.rl.policy import Policy
from entropix.rl.rollout import to_global
from entropix.rl.update import PolicyForward
from entropix.tasks.codecs import encode_answers, encode_prompts
from entropix.train import TrainConfig, fit


def sft_loss(
    forward: PolicyForward, regularizer: Term | None = None
) -> Callable[
    [nnx.Module, Mapping[str, jax.Array], jax.Array, Mapping[str, jax.Array]],
    tuple[jax.Array, dict[str, jax.Array]],
]:
    """``loss_fn(model, batch, key, controls)``: answer cross-entropy (+ ``regularizer``), the
    answers' entropy and the regularizer's ``<name>/...`` metrics as metrics. A regularizer
    that reads full logits needs ``forward.full_logits``.

    Args:
        forward: the policy forward giving the answer tokens' log-probs and entropies.
        regularizer: a loss term added with its coefficient (token-mean over the answer
            tokens); default none.

    Returns:
        ``loss_fn(model, batch, key, controls) -> (loss, metrics)`` for ``entropix.train.fit``;
        the batch holds ``prompt`` / ``prompt_mask`` [B, P] and ``answer`` / ``answer_mask``
        [B, N]; the metrics are ``entropy``, ``sft/cross_entropy`` and the regularizer's
        ``<name>/loss`` and ``<name>/...``.
    """

    def loss_fn(model, batch, key, controls):
        logp, entropy, logits = forward(
            model, batch["prompt"], batch["prompt_mask"], batch["answer"]
        )
        mask = batch["answer_mask"].astype(jnp.float32)
        loss = -masked_mean(logp, mask)
        metrics = {"entropy": masked_mean(entropy, mask), "sft/cross_entropy": loss}
        if regularizer is not None:
            answers = make_policy_batch(
                logp, jnp.zeros(logp.shape[:1]), mask, entropy=entropy, logits=logits, key=key,
                controls=controls,
            )  # fmt: skip
            value, extra = regularizer.evaluate(answers)
            loss = loss + regularizer.coef * value
            metrics[f"{regularizer.name}/loss"] = value
            metrics.update({f"{regularizer.name}/{k}": v for k, v in extra.items()})
        return loss, metrics

    return loss_fn


def sft_regularizer(config: SFTConfig) -> Term | None:
    """The term ``config.regularizer`` names (checked: a term reading no reference policy).

    Args:
        config: the ``sft:`` section.

    Returns:
        The built loss term, or None when ``config.regularizer`` is unset.

    Raises:
        ValueError: when the method is not a loss term or needs a reference policy.
    """
    if config.regularizer is None:
        return None
    name = config.regularizer.name
    kind = get_method(name).kind
    if kind not in ("objective", "intervention", "auxiliary"):
        raise ValueError(f"sft.regularizer: {name!r} is an {kind} method, not a loss term")
    term = config.regularizer.build()
    if not isinstance(term, Term):
        raise ValueError(
            f"sft.regularizer: {config.regularizer.name!r} is not a loss term "
            f"(got {type(term).__name__})"
        )
    if "ref_logp" in term.all_needs:
        raise ValueError(
            f"sft.regularizer: {term.name!r} needs a reference policy, which SFT does not have"
        )
    return term


def warm_start(
    directory: str | Path,
    config: SFTConfig,
    task: Any,
    policy: Policy,
    mesh: Mesh,
    *,
    seed: int = 0,
    stream: TextIO | None = None,
) -> nnx.State:
    """The policy parameters after ``config.steps`` SFT steps in ``directory`` (resumed or
    reused when that run is already there).

    Args:
        directory: the SFT run directory (its checkpoints and metrics).
        config: the ``sft:`` section (steps, batch size, learning rate, regularizer).
        task: a prompt source with ``sft_problems(step, n)`` (problems with canonical answers).
        policy: the policy to warm up (model, starting weights, codec, layout).
        mesh: the device mesh of the run.
        seed: the seed of the model initialisation and the step RNG; default 0.
        stream: where progress goes; default stdout.

    Returns:
        The trained parameters (an ``nnx.State`` of the ``nnx.Param`` variables, on the mesh).
    """
    layout, codec = policy.layout, policy.codec
    regularizer = sft_regularizer(config)
    needs = frozenset() if regularizer is None else regularizer.all_needs

    def data(position, state):
        del state
        problems = task.sft_problems(position, config.batch_size)
        prompt, prompt_mask = encode_prompts(codec, problems, layout)
        answer, answer_mask = encode_answers(codec, problems, layout)
        batch = {"prompt": prompt, "prompt_mask": prompt_mask, "answer": answer}
        batch["answer_mask"] = answer_mask
        return {k: to_global(v, mesh) for k, v in batch.items()}

    result = fit(
        Path(directory),
        model_fn=policy.model_fn,
        optimizer=optax.adam(config.lr),
        loss_fn=sft_loss(PolicyForward(full_logits="logits" in needs), regularizer),
        data=data,
        config=TrainConfig(
            steps=config.steps,
            checkpoint_every=config.steps,
            keep=1,
            stage="sft",
            progress_every=max(1, config.steps // 4),
            tensorboard=False,
            seed=seed,
        ),
        mesh=mesh,
        stream=stream,
        init_params=policy.init_params,
    )
    return result.state.params
