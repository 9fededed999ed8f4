"""Entropy bonus: reward high policy entropy at every token (the classic maximum-entropy term)."""

import jax.numpy as jnp

from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.registry import register
from entropix.validation import check_positive


@register(
    "entropy_bonus",
    paper="Asynchronous Methods for Deep Reinforcement Learning",
    kind="intervention",
)
def entropy_bonus(coef: float = 1e-3) -> Term:
    """Entropy bonus: subtract coef * H_t from the loss at every valid token.

    Formula:
        loss_t = -H_t,   H_t = -sum_v pi(v | y_<t) log pi(v | y_<t)   (weighted by coef)

    Paper: Asynchronous Methods for Deep Reinforcement Learning (Mnih et al., 2016), after
    Williams and Peng (1991).

    Defaults: coef = 1e-3. A3C used 0.01 on Atari; for LLM RL the Entropy Mechanism paper
    reports 1e-4..1e-3 too weak and 1e-2 exploding, so we default to the upper end of the
    stable range. Needs ``batch.entropy`` computed from the policy's logits so that it carries
    gradient.
    """
    check_positive(coef, "coef")

    def fn(batch: PolicyBatch, mask):
        entropy = batch.require("entropy", "entropy_bonus")
        return -jnp.asarray(entropy, jnp.float32), {}

    return Term("entropy", fn, coef=coef)
