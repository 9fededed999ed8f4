"""Forking tokens: the highest-entropy fraction of a batch's tokens (the "20%" that branch)."""

from entropix.losses.batch import PolicyBatch
from entropix.losses.registry import register
from entropix.losses.selectors import Selector, fraction_count, top_k_mask, valid_count
from entropix.validation import check_positive


@register(
    "forking_tokens",
    paper="Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement "
    "Learning for LLM Reasoning",
    kind="selector",
)
def forking_tokens(rho: float = 0.2) -> Selector:
    """Select the top-rho fraction of valid tokens by entropy (restrict the gradient to them).

    Formula:
        N = number of valid tokens in the batch,  k = max(1, floor(rho N))
        forking = the k valid tokens with the largest H_t (ties: earlier flat position first)

    Paper: Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement
    Learning for LLM Reasoning (Wang et al., 2025).

    Defaults: rho = 0.2 over the whole batch. Use it as ``ppo_clip().where(forking_tokens())``:
    the policy-gradient term is then averaged over the forking tokens only, as in the paper's
    masking of the other 80%. Entropy is taken from ``batch.entropy`` (never differentiated).

    Args:
        rho: fraction of the batch's valid tokens to select, 0 < rho <= 1.

    Returns:
        A :class:`Selector` named ``"forking<rho>"`` (reads ``batch.entropy``).
    """
    check_positive(rho, "rho")
    if rho > 1:
        raise ValueError(f"rho is a fraction of tokens and must be <= 1; got {rho}")

    def fn(batch: PolicyBatch):
        entropy = batch.require("entropy", "forking_tokens")
        k = fraction_count(rho, valid_count(batch.mask))
        return top_k_mask(entropy, batch.mask, k)

    return Selector(f"forking{rho:g}", fn)
