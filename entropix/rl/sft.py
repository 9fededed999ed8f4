"""Supervised warm-up before RL: teach the policy the task's answer format.

Cross-entropy of the canonical answer + EOS after each prompt, token-mean over the answer
tokens, Adam, trained with ``entropix.train.fit`` in its own directory (so it checkpoints and
resumes like any run, and a sweep can share one warm start between methods):

    L = -(1 / sum m) sum_{b, t} m[b, t] log pi(answer[b, t] | prompt_b, answer[b, <t])
"""

from pathlib import Path

import jax.numpy as jnp
import optax
from flax import nnx

from entropix.entropy import masked_mean
from entropix.rl.config import SFTConfig
from entropix.rl.policy import Policy
from entropix.rl.rollout import to_global
from entropix.rl.update import PolicyForward
from entropix.tasks.codecs import encode_answers, encode_prompts
from entropix.train import TrainConfig, fit


def sft_loss(forward: PolicyForward):
    """``loss_fn(model, batch, key, controls)``: answer cross-entropy, its entropy as metric."""

    def loss_fn(model, batch, key, controls):
        del key, controls
        logp, entropy, _ = forward(model, batch["prompt"], batch["prompt_mask"], batch["answer"])
        mask = batch["answer_mask"].astype(jnp.float32)
        return -masked_mean(logp, mask), {"entropy": masked_mean(entropy, mask)}

    return loss_fn


def warm_start(
    directory, config: SFTConfig, task, policy: Policy, mesh, *, seed: int = 0, stream=None
) -> nnx.State:
    """The policy parameters after ``config.steps`` SFT steps in ``directory`` (resumed or
    reused when that run is already there)."""
    layout, codec = policy.layout, policy.codec

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
        loss_fn=sft_loss(PolicyForward()),
        data=data,
        config=TrainConfig(
            steps=config.steps,
            checkpoint_every=config.steps,
            keep=1,
            progress_every=max(1, config.steps // 4),
            tensorboard=False,
            seed=seed,
        ),
        mesh=mesh,
        stream=stream,
        init_params=policy.init_params,
    )
    return result.state.params
