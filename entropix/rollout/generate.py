"""Batched autoregressive generation in one compiled program: prefill, then a decode loop.

    prompts [B, P] (+ prompt_mask) --prefill--> KV cache, logits of the last prompt token
    repeat (lax.while_loop, stops early once every row has emitted an EOS id):
        v_t ~ sampler(key_t, z_t)
        logp_t = log softmax(z_t / tau)[v_t],  H_t = H(softmax(z_t / tau)),  tau = score_temperature
        z_{t+1} = model(v_t, cache)

Prompts may be left-, right- or irregularly padded: they are first left-aligned (real tokens
moved to the end of the row, order kept) and RoPE positions count real tokens only, so a row's
result does not depend on its padding. After a row emits an EOS id its later tokens are
``pad_id`` with mask 0 (the EOS itself has mask 1). ``use_cache=False`` recomputes the full
forward over prompt + generated tokens at every step (the reference the cache is tested
against, and the baseline of the rollout benchmark).

``generate`` is jitted (cached on the model's graph, the sampler value and the sizes);
``decode`` is the same program un-jitted, for use inside an enclosing ``jax.jit``/``nnx.jit``.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.typing import ArrayLike

from entropix.entropy import log_softmax, shannon_entropy
from entropix.rollout.samplers import make_sampler
from entropix.validation import check_mask, check_positive, check_rank


@struct.dataclass
class Rollout:
    """Generated continuations. Prompts are returned left-aligned.

    prompt_tokens, prompt_mask: [B, P]; tokens, logprobs, entropy, mask: [B, N] where mask marks
    generated tokens up to and including the first EOS.
    """

    prompt_tokens: jax.Array
    prompt_mask: jax.Array
    tokens: jax.Array
    logprobs: jax.Array
    entropy: jax.Array
    mask: jax.Array

    @property
    def lengths(self) -> jax.Array:
        """Number of generated tokens per row (EOS included)."""
        return jnp.sum(self.mask, axis=-1, dtype=jnp.int32)

    def sequences(self) -> tuple[jax.Array, jax.Array]:
        """(tokens, mask) of prompt + completion, [B, P + N].

        Returns:
            (tokens, mask): the prompt tokens followed by the completion, [B, P + N], and
            their mask (the prompt mask, then the completion mask).
        """
        return (
            jnp.concatenate([self.prompt_tokens, self.tokens], axis=1),
            jnp.concatenate([self.prompt_mask, self.mask], axis=1),
        )


def left_align(tokens: jax.Array, mask: jax.Array, pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """Move each row's real tokens to the right end (order kept); pads (mask 0) go first.

    Args:
        tokens: int [B, P] token ids.
        mask: [B, P] bool (or 0/1 values), the real tokens.
        pad_id: the id written at the padded positions; default 0.

    Returns:
        (tokens, mask): [B, P] ids with each row's real tokens at its end and ``pad_id``
        before them, and the bool [B, P] mask moved alike.
    """
    mask = mask.astype(bool)
    order = jnp.argsort(mask.astype(jnp.int32), axis=-1, stable=True)
    tokens = jnp.take_along_axis(tokens, order, axis=-1)
    mask = jnp.take_along_axis(mask, order, axis=-1)
    return jnp.where(mask, tokens, pad_id), mask


def _score(logits, ids, tau):
    logp = jnp.take_along_axis(log_softmax(logits, tau), ids[:, None], axis=-1)[:, 0]
    return logp, shannon_entropy(logits, tau)


def decode(
    model: nnx.Module,
    prompt_tokens: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    sampler: Callable[[jax.Array, jax.Array], jax.Array],
    eos_ids: tuple[int, ...] = (),
    pad_id: int = 0,
    use_cache: bool = True,
    score_temperature: float = 1.0,
) -> Rollout:
    """Un-jitted generation program (see the module docstring); the model must be in eval mode.

    Args:
        model: the causal LM (with ``init_cache`` when ``use_cache``), in eval mode.
        prompt_tokens: int32 [B, P] prompt ids, any padding.
        prompt_mask: bool [B, P], the real prompt tokens.
        key: the PRNG key of the sampling (split once per step).
        max_new_tokens: N, the number of decode steps at most.
        sampler: ``(key, logits [B, V]) -> ids [B]``.
        eos_ids: token ids that end a row (the EOS itself is kept, mask 1); default none.
        pad_id: the id of the prompt padding and of the tokens after EOS; default 0.
        use_cache: decode with the KV cache; False recomputes the full forward each step.
        score_temperature: tau of the scored log-probs and entropies, > 0; default 1.

    Returns:
        A ``Rollout``: the left-aligned prompts [B, P] and the completions [B, N] with their
        log-probs, entropies (nats) and mask.
    """
    b, p = prompt_tokens.shape
    n = max_new_tokens
    prompts, pmask = left_align(prompt_tokens, prompt_mask, pad_id)
    eos = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)
    zeros_f = jnp.zeros((b, n), jnp.float32)
    outputs = (jnp.full((b, n), pad_id, jnp.int32), zeros_f, zeros_f, jnp.zeros((b, n), bool))

    if use_cache:
        out = model(prompts, cache=model.init_cache(b, p + n), attention_mask=pmask)
        model_state = out.cache
        logits = out.logits[:, -1]
    else:
        buffer = jnp.concatenate([prompts, jnp.full((b, n), pad_id, jnp.int32)], axis=1)
        valid = jnp.concatenate([pmask, jnp.zeros((b, n), bool)], axis=1)
        model_state = (buffer, valid)
        logits = model(prompts, attention_mask=pmask).logits[:, -1]

    def step(i, model_state, ids):
        if use_cache:
            out = model(ids[:, None], cache=model_state)
            return out.cache, out.logits[:, 0]
        buffer, valid = model_state
        buffer = buffer.at[:, p + i].set(ids)
        valid = valid.at[:, p + i].set(True)
        logits = model(buffer, attention_mask=valid).logits
        return (buffer, valid), jax.lax.dynamic_index_in_dim(logits, p + i, 1, keepdims=False)

    def cond(carry):
        i, _, _, _, done, _ = carry
        return (i < n) & ~jnp.all(done)

    def body(carry):
        i, model_state, logits, key, done, (tokens, logps, ents, mask) = carry
        key, sub = jax.random.split(key)
        ids = sampler(sub, logits).astype(jnp.int32)
        logp, ent = _score(logits, ids, score_temperature)
        active = ~done
        ids = jnp.where(active, ids, pad_id)
        tokens = tokens.at[:, i].set(ids)
        logps = logps.at[:, i].set(jnp.where(active, logp, 0.0))
        ents = ents.at[:, i].set(jnp.where(active, ent, 0.0))
        mask = mask.at[:, i].set(active)
        done = done | jnp.isin(ids, eos)
        model_state, logits = step(i, model_state, ids)
        return i + 1, model_state, logits, key, done, (tokens, logps, ents, mask)

    init = (jnp.zeros((), jnp.int32), model_state, logits, key, jnp.zeros((b,), bool), outputs)
    *_, (tokens, logps, ents, mask) = jax.lax.while_loop(cond, body, init)
    return Rollout(prompts, pmask, tokens, logps, ents, mask)


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "max_new_tokens",
        "sampler",
        "eos_ids",
        "pad_id",
        "use_cache",
        "score_temperature",
    ),
)
def _generate_jit(graphdef, state, prompt_tokens, prompt_mask, key, **static):
    model = nnx.merge(graphdef, state)
    model.eval()
    return decode(model, prompt_tokens, prompt_mask, key, **static)


def generate(
    model: nnx.Module,
    prompt_tokens: ArrayLike,
    prompt_mask: jax.Array | np.ndarray | None = None,
    *,
    key: jax.Array,
    max_new_tokens: int,
    sampler: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    eos_ids: int | Sequence[int] | None = None,
    pad_id: int = 0,
    use_cache: bool = True,
    score_temperature: float = 1.0,
) -> Rollout:
    """Sample ``max_new_tokens`` continuations of ``prompt_tokens`` [B, P] in one jitted call.

    ``sampler`` is a ``(key, logits) -> ids`` callable (default greedy), a static argument of
    the compiled program: prefer ``make_sampler(...)`` values, which compare by value, over new
    closures/partials, which recompile per object. ``eos_ids`` stop a row;
    logprobs / entropy are of softmax(logits / score_temperature). The model's own state is not
    modified (generation runs in eval mode on a copy of the graph).

    Args:
        model: the causal LM (an ``nnx.Module`` such as ``entropix.models.Llama``).
        prompt_tokens: integer [B, P] prompt ids; left-, right- or irregularly padded.
        prompt_mask: [B, P] bool (or 0/1 float), the real prompt tokens; default all real.
        key: the PRNG key of the sampling.
        max_new_tokens: N, the completion length budget, >= 1.
        sampler: ``(key, logits [B, V]) -> ids [B]``; default ``make_sampler("greedy")``.
        eos_ids: token id(s) that end a row; default none (every row runs N steps).
        pad_id: the id of the padding and of the tokens after EOS; default 0.
        use_cache: decode with the KV cache; False recomputes the full forward each step
            (the reference); default True.
        score_temperature: tau of the scored log-probs and entropies, > 0; default 1.

    Returns:
        A ``Rollout``: the left-aligned prompts [B, P] and the completions [B, N]: int32
        tokens, float32 log-probs and entropies (nats) of softmax(logits / tau), bool mask up to
        and including the first EOS.

    Raises:
        TypeError: when the prompt ids are not integers or the sampler is not callable.
        ValueError: for a bad shape, mask or non-positive size / temperature.
    """
    check_rank(prompt_tokens, "prompt_tokens", 2)
    if not jnp.issubdtype(jnp.result_type(prompt_tokens), jnp.integer):
        raise TypeError(f"prompt_tokens must be integer ids; got {prompt_tokens.dtype}")
    if prompt_mask is None:
        prompt_mask = jnp.ones(prompt_tokens.shape, bool)
    check_mask(prompt_mask, "prompt_mask", prompt_tokens.shape)
    check_positive(max_new_tokens, "max_new_tokens")
    check_positive(score_temperature, "score_temperature")
    if sampler is None:
        sampler = make_sampler("greedy")
    if not callable(sampler):
        raise TypeError(f"sampler must be callable (key, logits) -> ids; got {sampler!r}")
    if eos_ids is None:
        eos_ids = ()
    elif isinstance(eos_ids, int):
        eos_ids = (eos_ids,)
    graphdef, state = nnx.split(model)
    return _generate_jit(
        graphdef,
        state,
        jnp.asarray(prompt_tokens, jnp.int32),
        prompt_mask.astype(bool),
        key,
        max_new_tokens=int(max_new_tokens),
        sampler=sampler,
        eos_ids=tuple(int(e) for e in eos_ids),
        pad_id=int(pad_id),
        use_cache=bool(use_cache),
        score_temperature=float(score_temperature),
    )
