"""AEPO: entropy control by a REINFORCE term on temperature-adjusted samples ("Arbitrary
Entropy Policy Optimization Breaks The Exploration Bottleneck of Reinforcement Learning",
Wang et al., 2025).

The rollout samples an extra batch from pi^T (softmax(z / T)); T is high when the policy's
entropy is below the target and low otherwise (:func:`aepo_temperature`, stateless; the
controller in ``entropix.optim`` owns the entropy estimate). :func:`aepo` is the loss on that
extra batch; add it to the main objective's loss.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.registry import register
from entropix.validation import check_positive


def aepo_temperature(
    entropy: ArrayLike, target: float = 0.5, t_high: float = 1.2, t_low: float = 0.8
) -> jax.Array:
    """Sampling temperature for the regulariser batch: t_high if entropy < target, else t_low.

    Args:
        entropy: the policy's current entropy estimate (nats), a scalar or any shape.
        target: the target entropy H_target (nats).
        t_high: temperature used while the entropy is below target (> 0).
        t_low: temperature used otherwise (> 0).

    Returns:
        float32 array of ``entropy``'s shape, the sampling temperature.
    """
    return jnp.where(jnp.asarray(entropy, jnp.float32) < target, t_high, t_low)


@register(
    "aepo",
    paper="Arbitrary Entropy Policy Optimization Breaks The Exploration Bottleneck of "
    "Reinforcement Learning",
    kind="intervention",
)
def aepo(coef: float = 1.0) -> Term:
    """AEPO regulariser: REINFORCE with the verifiable reward on samples drawn from pi^T.

    Formula:
        y ~ pi_theta^T,  T = T_high if H(pi_old) < H_target else T_low
        loss_t = -R(y) * logp_t,  logp_t = log pi_theta(y_t | y_<t) at temperature 1
        grad = -coef * E_{y ~ pi^T}[ R(y) grad log pi_theta(y) ]

    Paper: Arbitrary Entropy Policy Optimization Breaks The Exploration Bottleneck of
    Reinforcement Learning (Wang et al., 2025).

    Defaults: coef alpha = 1; H_target = 0.5, T_high = 1.2, T_low = 0.8 (the authors' default
    configuration; see :func:`aepo_temperature`). Evaluate this term on the batch of
    temperature-T samples (``batch.rewards`` [B] is R, ``batch.logp`` the temperature-1
    log-probs); no baseline is subtracted, so with 0/1 rewards only correct samples push.
    The term declares ``sampled_at="aepo_temperature"``: the RL trainer samples that batch at
    ``controls["aepo_temperature"]`` (the ``aepo_temperature`` controller,
    ``entropix.optim.AEPOTemperature``) and evaluates the term on it.

    Args:
        coef: > 0, the regulariser weight alpha.

    Returns:
        A per-token :class:`Term` named ``"aepo"``, sampled at the ``aepo_temperature``
        control.
    """
    check_positive(coef, "coef")

    def fn(batch: PolicyBatch, mask):
        rewards = batch.require("rewards", "aepo")
        logp = jnp.asarray(batch.logp, jnp.float32)
        return -jnp.asarray(rewards, jnp.float32)[:, None] * logp, {}

    return Term("aepo", fn, coef=coef, sampled_at="aepo_temperature")
