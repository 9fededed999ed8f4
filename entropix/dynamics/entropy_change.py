"""First-order entropy change of a softmax policy under a logit update.

From "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models" (Cui et al.
2025). For pi = softmax(z) at one state and a small logit step z -> z + dz (Lemma 1):

    H(pi') - H(pi) = -Cov_{a~pi}( log pi(a), dz(a) ) + O(|dz|^2)

For a tabular softmax policy updated by policy gradient with step size eta on
J = E_{a~pi} r(a), A(a) = r(a) - E_{a~pi} r:

* vanilla PG:  dz(a) = eta * pi(a) * A(a)  =>  dH ~= -eta * Cov_{a~pi}( log pi(a), pi(a) A(a) )
* natural PG:  dz(a) = eta * A(a)          =>  dH ~= -eta * Cov_{a~pi}( log pi(a), A(a) )

(Proposition 1 and Theorem 1 of the paper.) An action that is both likely and advantageous
lowers entropy; a rare action with high advantage raises it. With sampled tokens, where A is
known only for the token taken, the expectation over a~pi is replaced by the batch of tokens:

    Cov_t = (log pi(y_t) - mean log pi) * (A_t - mean A)    (the per-token term Clip-Cov /
    dH_batch ~= -eta * mean_t Cov_t                           KL-Cov act on; means over the mask)
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import masked_mean
from entropix.validation import check_floating, check_mask, check_min_rank, check_rank


def _check_pair(logits, other, name):
    check_floating(logits, "logits")
    check_floating(other, name)
    check_min_rank(logits, "logits", 1, "[..., actions]")
    if jnp.shape(logits) != jnp.shape(other):
        raise ValueError(
            f"{name} must have the shape of logits {jnp.shape(logits)}; got {jnp.shape(other)}"
        )


def softmax_covariance(logits: ArrayLike, values: ArrayLike) -> jax.Array:
    """Cov_{a~softmax(logits)}( log pi(a), values(a) ) over the last axis, in float32.

    Args:
        logits: floating [..., A] logits of pi (A actions).
        values: [..., A] a value per action (the shape of ``logits``).

    Returns:
        float32 [...] covariances, one per state.
    """
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    p = jnp.exp(logp)
    values = jnp.asarray(values, jnp.float32)
    mean_logp = jnp.sum(p * logp, axis=-1, keepdims=True)
    mean_values = jnp.sum(p * values, axis=-1, keepdims=True)
    return jnp.sum(p * (logp - mean_logp) * (values - mean_values), axis=-1)


def predicted_entropy_change(logits: ArrayLike, logit_update: ArrayLike) -> jax.Array:
    """First-order dH for z -> z + dz: -Cov_{a~pi}(log pi(a), dz(a)) per state ``[...]``.

    Formula and paper: the module docstring (Lemma 1 of Cui et al. 2025).

    Args:
        logits: floating [..., A] logits z of pi = softmax(z).
        logit_update: floating [..., A] the step dz (the shape of ``logits``).

    Returns:
        float32 [...] predicted entropy changes in nats.
    """
    _check_pair(logits, logit_update, "logit_update")
    return -softmax_covariance(logits, logit_update)


def pg_logit_update(
    logits: ArrayLike, rewards: ArrayLike, lr: float | jax.Array, natural: bool = False
) -> jax.Array:
    """The tabular softmax PG step on J = E_pi r: eta*pi*A (vanilla) or eta*A (natural).

    Formula: A(a) = r(a) - E_{a~pi} r; dz = eta pi A (vanilla) or eta A (natural).

    Args:
        logits: floating [..., A] logits of pi.
        rewards: floating [..., A] reward of each action (the shape of ``logits``).
        lr: eta, the step size.
        natural: the natural-gradient step instead of the vanilla one; default False.

    Returns:
        float32 [..., A] logit update dz.
    """
    _check_pair(logits, rewards, "rewards")
    # exp(log_softmax), as in softmax_covariance: within one jit XLA computes it once for both
    p = jnp.exp(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1))
    rewards = jnp.asarray(rewards, jnp.float32)
    advantage = rewards - jnp.sum(p * rewards, axis=-1, keepdims=True)
    return lr * advantage if natural else lr * p * advantage


def predicted_entropy_change_pg(
    logits: ArrayLike, rewards: ArrayLike, lr: float | jax.Array, natural: bool = False
) -> jax.Array:
    """-eta Cov(log pi, pi A) (vanilla PG) or -eta Cov(log pi, A) (natural PG) per state.

    Paper: Proposition 1 and Theorem 1 of Cui et al. 2025 (module docstring).

    Args:
        logits: floating [..., A] logits of pi.
        rewards: floating [..., A] reward of each action.
        lr: eta, the step size.
        natural: the natural-gradient step instead of the vanilla one; default False.

    Returns:
        float32 [...] predicted entropy changes in nats.
    """
    return predicted_entropy_change(logits, pg_logit_update(logits, rewards, lr, natural))


def token_covariance(logp: ArrayLike, advantages: ArrayLike, mask: ArrayLike) -> jax.Array:
    """Per-token centred product (log pi(y_t) - mean log pi) * (A_t - mean A), 0 off the mask.

    Means are over the valid tokens.

    Args:
        logp: floating [batch, time] log pi(y_t) of the sampled tokens.
        advantages: [batch, time] per-token advantages, or anything broadcastable to it
            (e.g. [batch, 1] per response).
        mask: float or bool [batch, time], 1/True = valid token.

    Returns:
        float32 [batch, time] the per-token covariance terms Cov_t (0 off the mask).
    """
    check_floating(logp, "logp")
    check_rank(logp, "logp", 2)
    check_mask(mask, "mask", jnp.shape(logp))
    advantages = jnp.broadcast_to(jnp.asarray(advantages, jnp.float32), jnp.shape(logp))
    logp = jnp.asarray(logp, jnp.float32)
    centred_logp = logp - masked_mean(logp, mask)
    centred_adv = advantages - masked_mean(advantages, mask)
    return jnp.where(mask, centred_logp * centred_adv, 0.0)


def batch_predicted_entropy_change(
    logp: ArrayLike, advantages: ArrayLike, mask: ArrayLike, lr: float | jax.Array = 1.0
) -> jax.Array:
    """Batch estimate dH ~= -eta * mean_t Cov_t over the valid tokens (natural-PG form).

    Args:
        logp: floating [batch, time] log pi(y_t) of the sampled tokens.
        advantages: [batch, time] per-token advantages, or broadcastable to it.
        mask: float or bool [batch, time], 1/True = valid token.
        lr: eta, the step size; default 1.0.

    Returns:
        float32 scalar predicted entropy change in nats.
    """
    return -lr * masked_mean(token_covariance(logp, advantages, mask), mask)
