"""Rollouts (layer 6): jitted batched generation with a KV cache, samplers, entropy-fork branching.

See ``docs/models.md`` (section "Rollouts") for the decode loop, the samplers and their rules.
"""

from entropix.rollout.branching import Branches, branch, continue_from, fork_positions, splice
from entropix.rollout.generate import Rollout, decode, generate, left_align
from entropix.rollout.samplers import (
    SAMPLER_QUADRANTS,
    SAMPLERS,
    Sampler,
    adaptive_temperature,
    entropy_temperature,
    entropy_varentropy,
    entropy_varentropy_quadrant,
    greedy,
    make_sampler,
    min_p,
    min_p_mask,
    temperature,
    top_k,
    top_p,
    top_p_mask,
)

__all__ = [
    "Branches",
    "branch",
    "continue_from",
    "fork_positions",
    "splice",
    "SAMPLER_QUADRANTS",
    "SAMPLERS",
    "Rollout",
    "Sampler",
    "adaptive_temperature",
    "decode",
    "entropy_temperature",
    "entropy_varentropy",
    "entropy_varentropy_quadrant",
    "generate",
    "greedy",
    "left_align",
    "make_sampler",
    "min_p",
    "min_p_mask",
    "temperature",
    "top_k",
    "top_p",
    "top_p_mask",
]
