"""KL divergence to a frozen reference policy, estimated from the sampled tokens.

With d = ref_logp - logp = log(pi_ref / pi_theta) at the sampled token (samples from pi_theta):

    k1 = -d                   unbiased, high variance, can be negative
    k2 = d^2 / 2              biased, low variance, >= 0
    k3 = exp(d) - 1 - d       unbiased, low variance, >= 0   (GRPO's choice)
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.losses.batch import PolicyBatch
from entropix.losses.compose import Term
from entropix.losses.registry import register
from entropix.validation import check_choice, check_positive

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(logp: ArrayLike, ref_logp: ArrayLike, estimator: str = "k3") -> jax.Array:
    """Per-token estimate of KL(pi_theta || pi_ref) from sampled-token log-probs (float32).

    Args:
        logp: log-probs of the sampled tokens under the policy, any shape (e.g. [B, T]).
        ref_logp: log-probs of the same tokens under the reference policy, same shape.
        estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (see the module docstring).

    Returns:
        float32 array of ``logp``'s shape, the per-token KL estimate (nats).
    """
    check_choice(estimator, "estimator", KL_ESTIMATORS)
    d = jnp.asarray(ref_logp, jnp.float32) - jnp.asarray(logp, jnp.float32)
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    return jnp.expm1(d) - d


@register(
    "kl_ref",
    paper="Approximating KL Divergence (Schulman, 2020); used with beta = 0.04 in DeepSeekMath: "
    "Pushing the Limits of Mathematical Reasoning in Open Language Models",
    kind="objective",
)
def kl_ref(coef: float = 0.04, estimator: str = "k3") -> Term:
    """KL penalty toward the reference policy, one estimate per sampled token.

    Formula:
        d_t = ref_logp_t - logp_t
        k1 = -d_t;  k2 = d_t^2 / 2;  k3 = exp(d_t) - 1 - d_t
        loss_t = k(d_t)   (weighted by coef)

    Paper: Approximating KL Divergence (J. Schulman, 2020, blog note); the k3 penalty with
    beta = 0.04 is GRPO's, DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
    Language Models (Shao et al., 2024).

    Defaults: coef = 0.04, estimator = "k3" (DeepSeekMath). Needs ``batch.ref_logp``.

    Args:
        coef: > 0, the KL weight beta.
        estimator: ``"k1"``, ``"k2"`` or ``"k3"``.

    Returns:
        A per-token :class:`Term` named ``"kl_ref"`` that needs ``ref_logp``.
    """
    check_positive(coef, "coef")
    check_choice(estimator, "estimator", KL_ESTIMATORS)

    def fn(batch: PolicyBatch, mask):
        ref_logp = batch.require("ref_logp", "kl_ref")
        return kl_estimate(batch.logp, ref_logp, estimator), {}

    return Term("kl_ref", fn, coef=coef, needs=("ref_logp",))
