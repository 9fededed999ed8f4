"""Entropy-fork branching: re-sample continuations from the highest-entropy positions of rollouts.

For each rollout row b, pick the k valid completion positions with the largest token entropy
H[b, t] (ties broken towards earlier positions),
    F_b = top-k_t { H[b, t] : mask[b, t] }
and for each fork position f in F_b start ``num_branches`` new continuations from the prefix
prompt_b + completion_b[:f], i.e. the token at f is re-sampled. A branch's completion is
    completion_b[:f] ++ continuation[: N - f]
so it keeps the original length budget N. Its log-probs, entropies and mask follow the same
splice (prefix values from the source rollout); ``fork_valid`` is False for forks of rows with
fewer than k valid tokens (their mask is all 0).

Papers: "ETTRL: Balancing Exploration and Exploitation in LLM Test-Time Reinforcement Learning
Via Entropy Mechanism" (Liu et al. 2025; entropy-fork tree rollouts) and "CURE: Critical-token-
gUided Re-concatenation for Entropy-collapse Prevention" (Li et al. 2025; re-generate from
high-entropy critical tokens, concatenating prefix and new continuation). Defaults here: k = 2
forks per rollout, 1 branch per fork.
"""

import jax
import jax.numpy as jnp
from flax import struct

from entropix.rollout.generate import Rollout, generate
from entropix.validation import check_mask, check_positive, check_rank


@struct.dataclass
class Branches:
    """Branched rollouts [M = B * k * num_branches rows] and where each came from."""

    rollout: Rollout
    source_row: jax.Array
    fork_position: jax.Array
    fork_valid: jax.Array


def fork_positions(entropy, mask, k: int):
    """(positions [B, k] int32, valid [B, k] bool): the k highest-entropy valid positions."""
    check_rank(entropy, "entropy", 2)
    check_mask(mask, "mask", entropy.shape)
    check_positive(k, "k")
    if k > entropy.shape[1]:
        raise ValueError(f"k={k} forks exceed the completion length {entropy.shape[1]}")
    valid = mask.astype(bool)
    scores = jnp.where(valid, jnp.asarray(entropy, jnp.float32), -jnp.inf)
    _, positions = jax.lax.top_k(scores, k)
    return positions.astype(jnp.int32), jnp.take_along_axis(valid, positions, axis=1)


def _splice(prefix, continuation, fork):
    """out[:, t] = prefix[:, t] for t < fork, else continuation[:, t - fork]."""
    t = jnp.arange(prefix.shape[1])[None, :]
    shifted = jnp.take_along_axis(continuation, jnp.maximum(t - fork[:, None], 0), axis=1)
    return jnp.where(t < fork[:, None], prefix, shifted)


def branch(
    model,
    rollout: Rollout,
    *,
    key,
    k: int = 2,
    num_branches: int = 1,
    sampler=None,
    eos_ids=None,
    pad_id: int = 0,
    use_cache: bool = True,
    score_temperature: float = 1.0,
) -> Branches:
    """Fork ``rollout`` at its k highest-entropy positions and re-generate from each fork."""
    check_positive(num_branches, "num_branches")
    b, n = rollout.tokens.shape
    positions, valid = fork_positions(rollout.entropy, rollout.mask, k)
    repeat = k * num_branches
    source = jnp.repeat(jnp.arange(b, dtype=jnp.int32), repeat)
    fork = jnp.repeat(positions, num_branches, axis=1).reshape(-1)
    fork_valid = jnp.repeat(valid, num_branches, axis=1).reshape(-1)

    def rows(x):
        return x[source]

    completion = rows(rollout.tokens)
    before_fork = jnp.arange(n)[None, :] < fork[:, None]
    prompts = jnp.concatenate([rows(rollout.prompt_tokens), completion], axis=1)
    prompt_mask = jnp.concatenate([rows(rollout.prompt_mask), before_fork], axis=1)
    new = generate(
        model,
        prompts,
        prompt_mask,
        key=key,
        max_new_tokens=n,
        sampler=sampler,
        eos_ids=eos_ids,
        pad_id=pad_id,
        use_cache=use_cache,
        score_temperature=score_temperature,
    )
    mask = _splice(rows(rollout.mask), new.mask, fork) & fork_valid[:, None]
    spliced = Rollout(
        prompt_tokens=rows(rollout.prompt_tokens),
        prompt_mask=rows(rollout.prompt_mask),
        tokens=jnp.where(mask, _splice(completion, new.tokens, fork), pad_id),
        logprobs=jnp.where(mask, _splice(rows(rollout.logprobs), new.logprobs, fork), 0.0),
        entropy=jnp.where(mask, _splice(rows(rollout.entropy), new.entropy, fork), 0.0),
        mask=mask,
    )
    return Branches(spliced, source, fork, fork_valid)
