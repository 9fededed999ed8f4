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


def softmax_covariance(logits, values):
    """Cov_{a~softmax(logits)}( log pi(a), values(a) ) over the last axis, in float32."""
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    p = jnp.exp(logp)
    values = jnp.asarray(values, jnp.float32)
    mean_logp = jnp.sum(p * logp, axis=-1, keepdims=True)
    mean_values = jnp.sum(p * values, axis=-1, keepdims=True)
    return jnp.sum(p * (logp - mean_logp) * (values - mean_values), axis=-1)


def predicted_entropy_change(logits, logit_update):
    """First-order dH for z -> z + dz: -Cov_{a~pi}(log pi(a), dz(a)) per state ``[...]``."""
    _check_pair(logits, logit_update, "logit_update")
    return -softmax_covariance(logits, logit_update)


def pg_logit_update(logits, rewards, lr, natural: bool = False):
    """The tabular softmax PG step on J = E_pi r: eta*pi*A (vanilla) or eta*A (natural)."""
    _check_pair(logits, rewards, "rewards")
    # exp(log_softmax), as in softmax_covariance: within one jit XLA computes it once for both
    p = jnp.exp(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1))
    rewards = jnp.asarray(rewards, jnp.float32)
    advantage = rewards - jnp.sum(p * rewards, axis=-1, keepdims=True)
    return lr * advantage if natural else lr * p * advantage


def predicted_entropy_change_pg(logits, rewards, lr, natural: bool = False):
    """-eta Cov(log pi, pi A) (vanilla PG) or -eta Cov(log pi, A) (natural PG) per state."""
    return predicted_entropy_change(logits, pg_logit_update(logits, rewards, lr, natural))


def token_covariance(logp, advantages, mask):
    """Per-token centred product (log pi(y_t) - mean log pi) * (A_t - mean A), 0 off the mask.

    ``logp``, ``advantages`` and ``mask`` are ``[B, T]``; means are over the valid tokens.
    """
    check_floating(logp, "logp")
    check_rank(logp, "logp", 2)
    check_mask(mask, "mask", jnp.shape(logp))
    advantages = jnp.broadcast_to(jnp.asarray(advantages, jnp.float32), jnp.shape(logp))
    logp = jnp.asarray(logp, jnp.float32)
    centred_logp = logp - masked_mean(logp, mask)
    centred_adv = advantages - masked_mean(advantages, mask)
    return jnp.where(mask, centred_logp * centred_adv, 0.0)


def batch_predicted_entropy_change(logp, advantages, mask, lr=1.0):
    """Batch estimate dH ~= -eta * mean_t Cov_t over the valid tokens (natural-PG form)."""
    return -lr * masked_mean(token_covariance(logp, advantages, mask), mask)
