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

    Args:
        coef: > 0, the bonus weight.

    Returns:
        A per-token :class:`Term` named ``"entropy"`` with values -H_t.
    """
    check_positive(coef, "coef")

    def fn(batch: PolicyBatch, mask):
        entropy = batch.require("entropy", "entropy_bonus")
        return -jnp.asarray(entropy, jnp.float32), {}

    return Term("entropy", fn, coef=coef)


@register(
    "adaptive_entropy_bonus",
    paper="Soft Actor-Critic Algorithms and Applications (automatic entropy coefficient); "
    "adaptive entropy control in LLM RL: Skywork Open Reasoner 1 Technical Report",
    kind="intervention",
)
def adaptive_entropy_bonus() -> Term:
    """Entropy bonus whose coefficient a controller steers toward a target entropy.

    Formula:
        loss_t = -alpha * H_t,   alpha = controls["entropy_coef"]
        (the ``adaptive_entropy_coef`` controller: log alpha += lr * (H_target - H) per step)

    Paper: Soft Actor-Critic Algorithms and Applications (Haarnoja et al., 2018) for the
    automatic coefficient; Skywork Open Reasoner 1 Technical Report (He et al., 2025) for its
    use against entropy collapse in LLM RL.

    Defaults: none here; the target, rate and bounds belong to the controller
    (``entropix.optim.AdaptiveEntropyCoef``: init alpha 1e-3, lr 0.01 per nat). Needs
    ``batch.entropy`` with gradient and ``batch.controls["entropy_coef"]``.

    Returns:
        A per-token :class:`Term` named ``"adaptive_entropy"`` (coefficient 1; alpha comes
        from the batch) with metric ``coef`` (alpha).
    """

    def fn(batch: PolicyBatch, mask):
        entropy = batch.require("entropy", "adaptive_entropy_bonus")
        alpha = batch.control("entropy_coef", "adaptive_entropy_bonus")
        return -alpha * jnp.asarray(entropy, jnp.float32), {"coef": alpha}

    return Term("adaptive_entropy", fn, controls=("entropy_coef",))
