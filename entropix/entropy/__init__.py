"""Entropy measures (layer 1): distributions, reductions, attention, spectra, and the fused path.

See ``docs/measures.md`` for every formula and its paper.
"""

from entropix.entropy.attention import attention_entropy, causal_mask
from entropix.entropy.distribution import (
    entropy_from_probs,
    log_softmax,
    renyi_entropy,
    shannon_entropy,
    tsallis_entropy,
    varentropy,
)
from entropix.entropy.fused import naive_token_logprobs_and_entropy, token_logprobs_and_entropy
from entropix.entropy.nucleus import nucleus_mask, top_p_entropy
from entropix.entropy.reductions import (
    AGGREGATION_MODES,
    aggregate,
    masked_mean,
    masked_sum,
    masked_var,
)
from entropix.entropy.spectral import (
    alpha_req,
    diffusion_spectral_entropy,
    effective_rank,
    matrix_entropy,
    rankme,
)

__all__ = [
    "AGGREGATION_MODES",
    "aggregate",
    "alpha_req",
    "attention_entropy",
    "causal_mask",
    "diffusion_spectral_entropy",
    "effective_rank",
    "entropy_from_probs",
    "log_softmax",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "matrix_entropy",
    "naive_token_logprobs_and_entropy",
    "nucleus_mask",
    "rankme",
    "renyi_entropy",
    "shannon_entropy",
    "token_logprobs_and_entropy",
    "top_p_entropy",
    "tsallis_entropy",
    "varentropy",
]
