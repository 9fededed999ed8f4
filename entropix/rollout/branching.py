"""Entropy-fork branching: re-sample continuations from the highest-entropy positions of rollouts.

For each rollout row b, pick the k valid completion positions with the largest token entropy
H[b, t] (ties broken towards earlier positions),
    F_b = top-k_t { H[b, t] : mask[b, t] }
and for each fork position f in F_b start ``num_branches`` new continuations from the prefix
prompt_b + completion_b[:f], i.e. the token at f is re-sampled. A branch's completion is
    completion_b[:f] ++ continuation[: N - f]
so it keeps the original length budget N. Its log-probs, entropies and mask follow the same
splice (prefix values from the source rollout); ``fork_valid`` is False for forks of rows with
fewer than k valid tokens (their mask is all 0). :func:`continue_from` is the splice step on
its own (any source rows and fork positions, any generator): the RL trainer's rollout
strategies (``entropix.rl.strategies``) build their trees from it.

Papers: "ETTRL: Balancing Exploration and Exploitation in LLM Test-Time Reinforcement Learning
Via Entropy Mechanism" (Liu et al. 2025; entropy-fork tree rollouts) and "CURE: Critical-token-
gUided Re-concatenation for Entropy-collapse Prevention" (Li et al. 2025; re-generate from
high-entropy critical tokens, concatenating prefix and new continuation). Defaults here: k = 2
forks per rollout, 1 branch per fork.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx, struct
from jax.typing import ArrayLike

from entropix.rollout.generate import Rollout, generate
from entropix.validation import check_mask, check_positive, check_rank


@struct.dataclass
class Branches:
    """Branched rollouts [M = B * k * num_branches rows] and where each came from.

    rollout: the M branches (prompts of their source rows, spliced completions [M, N]);
    source_row: int32 [M], the row of the source rollout each branch forks; fork_position:
    int32 [M], the completion position whose token was re-sampled; fork_valid: bool [M], False
    for forks of rows with fewer than k valid tokens (those branches are all padding, mask 0).
    """

    rollout: Rollout
    source_row: jax.Array
    fork_position: jax.Array
    fork_valid: jax.Array


def fork_positions(entropy: ArrayLike, mask: ArrayLike, k: int) -> tuple[jax.Array, jax.Array]:
    """(positions [B, k] int32, valid [B, k] bool): the k highest-entropy valid positions.

    Args:
        entropy: floating [B, N] per-token entropies of the completions, in nats.
        mask: [B, N] bool (or 0/1 float), the valid completion tokens.
        k: the number of forks per row, 1 <= k <= N.

    Returns:
        (positions, valid): int32 [B, k] positions, highest entropy first (ties towards
        earlier positions), and bool [B, k], False where a row has fewer than k valid tokens
        (that position is then an invalid one).

    Raises:
        ValueError: when k exceeds N (or the shapes do not match).
    """
    check_rank(entropy, "entropy", 2)
    check_mask(mask, "mask", entropy.shape)
    check_positive(k, "k")
    if k > entropy.shape[1]:
        raise ValueError(f"k={k} forks exceed the completion length {entropy.shape[1]}")
    valid = mask.astype(bool)
    scores = jnp.where(valid, jnp.asarray(entropy, jnp.float32), -jnp.inf)
    _, positions = jax.lax.top_k(scores, k)
    return positions.astype(jnp.int32), jnp.take_along_axis(valid, positions, axis=1)


def splice(prefix: jax.Array, continuation: jax.Array, fork: jax.Array) -> jax.Array:
    """out[:, t] = prefix[:, t] for t < fork, else continuation[:, t - fork].

    Args:
        prefix: [M, N] values of the source rows (tokens, log-probs, entropies or mask).
        continuation: [M, N] values of the new continuations (position 0 lands at the fork).
        fork: int32 [M] fork positions in 0..N.

    Returns:
        [M, N]: each row's prefix before its fork, then its continuation.
    """
    t = jnp.arange(prefix.shape[1])[None, :]
    shifted = jnp.take_along_axis(continuation, jnp.maximum(t - fork[:, None], 0), axis=1)
    return jnp.where(t < fork[:, None], prefix, shifted)


def continue_from(
    generate_fn: Callable[[jax.Array, jax.Array, jax.Array], Rollout],
    rollout: Rollout,
    source: ArrayLike,
    fork: ArrayLike,
    *,
    key: jax.Array,
    pad_id: int = 0,
) -> Rollout:
    """Re-generate row ``source[m]`` of ``rollout`` from its position ``fork[m]`` on.

    ``generate_fn(prompt_tokens [M, P + N], prompt_mask, key) -> Rollout`` samples N new tokens
    (``entropix.rollout.generate`` with the settings bound). Branch m keeps the source's
    completion before ``fork[m]`` (and its log-probs and entropies) and continues it with the
    new tokens: ``completion[:f] ++ continuation[: N - f]``, so it keeps the length budget N.
    Host (numpy) or device arrays; the result holds ``M`` rows.

    Args:
        generate_fn: ``(prompt_tokens [M, P + N], prompt_mask [M, P + N], key) -> Rollout``
            sampling N new tokens per row.
        rollout: the source rollouts, prompts [B, P] and completions [B, N].
        source: int [M], the source row of each branch, in 0..B-1.
        fork: int [M], the completion position of each branch's first new token, in 0..N-1.
        key: the PRNG key passed to ``generate_fn``.
        pad_id: the token id written where the spliced mask is 0; default 0.

    Returns:
        A ``Rollout`` of M rows: the source rows' prompts, completions
        ``completion[:f] ++ continuation[: N - f]`` with their spliced log-probs, entropies and
        mask (pad_id / 0 where the mask is 0).
    """
    source = jnp.asarray(source, jnp.int32)
    fork = jnp.asarray(fork, jnp.int32)
    n = rollout.tokens.shape[1]

    def rows(x):
        return jnp.asarray(x)[source]

    completion = rows(rollout.tokens)
    before_fork = jnp.arange(n)[None, :] < fork[:, None]
    prompts = jnp.concatenate([rows(rollout.prompt_tokens), completion], axis=1)
    prompt_mask = jnp.concatenate([rows(rollout.prompt_mask), before_fork], axis=1)
    new = generate_fn(prompts, prompt_mask, key)
    mask = splice(rows(rollout.mask), jnp.asarray(new.mask), fork)
    return Rollout(
        prompt_tokens=rows(rollout.prompt_tokens),
        prompt_mask=rows(rollout.prompt_mask),
        tokens=jnp.where(mask, splice(completion, jnp.asarray(new.tokens), fork), pad_id),
        logprobs=jnp.where(
            mask, splice(rows(rollout.logprobs), jnp.asarray(new.logprobs), fork), 0.0
        ),
        entropy=jnp.where(mask, splice(rows(rollout.entropy), jnp.asarray(new.entropy), fork), 0.0),
        mask=mask,
    )


def branch(
    model: nnx.Module,
    rollout: Rollout,
    *,
    key: jax.Array,
    k: int = 2,
    num_branches: int = 1,
    sampler: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    eos_ids: int | Sequence[int] | None = None,
    pad_id: int = 0,
    use_cache: bool = True,
    score_temperature: float = 1.0,
) -> Branches:
    """Fork ``rollout`` at its k highest-entropy positions and re-generate from each fork.

    Args:
        model: the policy (a causal LM with a KV cache, e.g. ``entropix.models.Llama``).
        rollout: the source rollouts, completions [B, N] with their entropies and mask.
        key: the PRNG key of the new continuations.
        k: forks per row, 1 <= k <= N; default 2.
        num_branches: continuations per fork, >= 1; default 1.
        sampler: ``(key, logits) -> ids`` for the continuations (see :func:`generate`);
            default greedy.
        eos_ids: token id(s) that end a row; default none.
        pad_id: the token id after EOS and in invalid branches; default 0.
        use_cache: decode with the KV cache (False recomputes the full forward); default True.
        score_temperature: the temperature of the scored log-probs and entropies, > 0;
            default 1.

    Returns:
        ``Branches`` of M = B * k * num_branches rows, grouped by source row then fork then
        branch; the branches of invalid forks are all padding (mask 0).
    """
    check_positive(num_branches, "num_branches")
    b, n = rollout.tokens.shape
    positions, valid = fork_positions(rollout.entropy, rollout.mask, k)
    repeat = k * num_branches
    source = jnp.repeat(jnp.arange(b, dtype=jnp.int32), repeat)
    fork = jnp.repeat(positions, num_branches, axis=1).reshape(-1)
    fork_valid = jnp.repeat(valid, num_branches, axis=1).reshape(-1)

    def generate_fn(prompts, prompt_mask, key):
        return generate(
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

    spliced = continue_from(generate_fn, rollout, source, fork, key=key, pad_id=pad_id)
    valid_rows = fork_valid[:, None]
    spliced = spliced.replace(
        tokens=jnp.where(valid_rows, spliced.tokens, pad_id),
        logprobs=jnp.where(valid_rows, spliced.logprobs, 0.0),
        entropy=jnp.where(valid_rows, spliced.entropy, 0.0),
        mask=spliced.mask & valid_rows,
    )
    return Branches(spliced, source, fork, fork_valid)
