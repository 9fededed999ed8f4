"""Token samplers: pure functions ``(key, logits[..., V], **params) -> ids[...]`` (int32).

Truncating samplers (top-k, top-p, min-p) choose the allowed set from the model distribution
p = softmax(logits) and then draw from the survivors at ``temperature`` (so a high temperature
never lets a truncated token back in, as argued for min-p). All probability math is fp32.

* ``greedy``: argmax_v logits.
* ``temperature``: v ~ softmax(logits / T).
* ``top_k`` (Fan et al. 2018, "Hierarchical Neural Story Generation"): sample among the k
  largest logits; defaults k = 40 (the paper's choice), T = 1.
* ``top_p`` / nucleus (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"):
  sort p descending, keep token i when the mass strictly before it is < p (the token that
  crosses p is kept, the top token always is); default p = 0.9.
* ``min_p`` (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling for Creative and Coherent
  LLM Outputs"): keep tokens with p_v >= p_base * max_v p_v; default p_base = 0.1.
* ``adaptive_temperature`` (entropy-adaptive temperature in the spirit of HAPO's Adaptive
  Temperature Sampling, "From Uniform to Heterogeneous: Tailoring Policy Optimization to Every
  Token's Nature", Liu et al. 2025 -- exploration at high-entropy tokens, coherence at
  low-entropy ones; the schedule is ours): with H = entropy of softmax(logits) in nats,
      T(H) = T_base * exp(alpha * tanh(H - pivot))
  so T = T_base at H = pivot, rises towards T_base e^alpha for uncertain tokens and falls towards
  T_base e^-alpha for confident ones. Defaults T_base = 1, alpha = 0.5, pivot = 1 nat.
* ``entropy_varentropy`` (quadrant sampler after the "entropix" sampler idea; rules are ours):
  H = entropy, V = varentropy = Var_p[-log p] of softmax(logits); per row
      H <  h_thr, V <  v_thr : confident            -> greedy
      H <  h_thr, V >= v_thr : few sharp rivals     -> top-k (k_rivals) at T = 1
      H >= h_thr, V <  v_thr : flat uncertainty     -> explore: min-p (0.05) at T = t_explore
      H >= h_thr, V >= v_thr : jagged uncertainty   -> careful: top-p (0.9) at T = t_careful
  Defaults h_thr = 1.0 nat, v_thr = 1.5 nat^2, k_rivals = 5, t_explore = 1.2, t_careful = 0.7.

``make_sampler(name, **params)`` returns a hashable ``Sampler`` (a value, not a closure), so it
can be a static argument of ``jax.jit`` and come from YAML.
"""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import nucleus_mask, shannon_entropy, varentropy
from entropix.validation import check_choice, check_floating, check_min_rank, check_positive


def _check_logits(logits):
    check_floating(logits, "logits")
    check_min_rank(logits, "logits", 1, "[..., vocab]")
    return jnp.asarray(logits, jnp.float32)


def _categorical(key, logits, temperature):
    check_positive(temperature, "temperature")
    return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)


def _sample_allowed(key, logits, allowed, temperature):
    return _categorical(key, jnp.where(allowed, logits, -jnp.inf), temperature)


def greedy(key: jax.Array | None, logits: ArrayLike) -> jax.Array:
    """argmax over the vocabulary (the key is unused; kept for the common signature).

    Args:
        key: unused (may be None); kept so every sampler is ``(key, logits, ...)``.
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.

    Returns:
        int32 [...] the arg-max token ids (the first one on ties).
    """
    del key
    return jnp.argmax(_check_logits(logits), axis=-1).astype(jnp.int32)


def temperature(key: jax.Array, logits: ArrayLike, temperature: float = 1.0) -> jax.Array:
    """v ~ softmax(logits / temperature).

    Args:
        key: a JAX PRNG key; the draw is a function of it.
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.
        temperature: the softmax temperature, > 0; default 1 (the model distribution).

    Returns:
        int32 [...] sampled token ids (the logits' shape without the vocabulary axis).
    """
    return _categorical(key, _check_logits(logits), temperature)


def top_k(key: jax.Array, logits: ArrayLike, k: int = 40, temperature: float = 1.0) -> jax.Array:
    """Sample among the k largest logits at ``temperature`` (exactly k candidates).

    Args:
        key: a JAX PRNG key; the draw is a function of it.
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.
        k: the number of candidates, >= 1 (capped at V); default 40 (Fan et al. 2018).
        temperature: the temperature of the draw among the candidates, > 0; default 1.

    Returns:
        int32 [...] sampled token ids (the logits' shape without the vocabulary axis).
    """
    logits = _check_logits(logits)
    check_positive(k, "k")
    k = min(int(k), logits.shape[-1])
    values, indices = jax.lax.top_k(logits, k)
    choice = _categorical(key, values, temperature)
    return jnp.take_along_axis(indices, choice[..., None], axis=-1)[..., 0].astype(jnp.int32)


def top_p_mask(logits: ArrayLike, p: float) -> jax.Array:
    """Bool [..., V]: the nucleus, i.e. tokens whose preceding (sorted) mass is < p
    (:func:`entropix.entropy.nucleus_mask`).

    Args:
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.
        p: the nucleus mass, in (0, 1].

    Returns:
        bool [..., V], True for the tokens of the nucleus (the top token always).
    """
    return nucleus_mask(logits, p)


def top_p(key: jax.Array, logits: ArrayLike, p: float = 0.9, temperature: float = 1.0) -> jax.Array:
    """Nucleus sampling: keep the smallest top set with mass >= p, sample at ``temperature``.

    Args:
        key: a JAX PRNG key; the draw is a function of it.
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.
        p: the nucleus mass of softmax(logits), in (0, 1]; default 0.9.
        temperature: the temperature of the draw among the kept tokens, > 0; default 1.

    Returns:
        int32 [...] sampled token ids (the logits' shape without the vocabulary axis).

    Raises:
        ValueError: when ``p`` is outside (0, 1].
    """
    logits = _check_logits(logits)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p: p must be in (0, 1]; got {p}")
    return _sample_allowed(key, logits, top_p_mask(logits, p), temperature)


def min_p_mask(logits: ArrayLike, p_base: float) -> jax.Array:
    """Bool [..., V]: tokens with p_v >= p_base * max p (log-space: z_v >= max z + log p_base).

    Args:
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.
        p_base: the fraction of the top probability a token must reach, in (0, 1].

    Returns:
        bool [..., V], True for the kept tokens (the top token always).
    """
    return logits >= jnp.max(logits, axis=-1, keepdims=True) + jnp.log(p_base)


def min_p(
    key: jax.Array, logits: ArrayLike, p_base: float = 0.1, temperature: float = 1.0
) -> jax.Array:
    """Min-p sampling: keep tokens with p_v >= p_base * p_max, sample at ``temperature``.

    Args:
        key: a JAX PRNG key; the draw is a function of it.
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.
        p_base: the fraction of the top probability a token must reach, in (0, 1];
            default 0.1 (Nguyen et al. 2024).
        temperature: the temperature of the draw among the kept tokens, > 0; default 1.

    Returns:
        int32 [...] sampled token ids (the logits' shape without the vocabulary axis).

    Raises:
        ValueError: when ``p_base`` is outside (0, 1].
    """
    logits = _check_logits(logits)
    if not 0.0 < p_base <= 1.0:
        raise ValueError(f"min_p: p_base must be in (0, 1]; got {p_base}")
    return _sample_allowed(key, logits, min_p_mask(logits, p_base), temperature)


def entropy_temperature(
    logits: ArrayLike, base: float = 1.0, alpha: float = 0.5, pivot: float = 1.0
) -> jax.Array:
    """Per-row temperature T(H) = base * exp(alpha * tanh(H - pivot)), H in nats.

    Args:
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.
        base: the temperature at H = pivot, > 0; default 1.
        alpha: the log-range of the schedule (T lies in base * [e^-alpha, e^alpha]); default 0.5.
        pivot: the entropy, in nats, where T = base; default 1.

    Returns:
        float32 [...] temperatures, one per row (the logits' shape without the vocabulary axis).
    """
    h = shannon_entropy(_check_logits(logits))
    return base * jnp.exp(alpha * jnp.tanh(h - pivot))


def adaptive_temperature(
    key: jax.Array,
    logits: ArrayLike,
    base: float = 1.0,
    alpha: float = 0.5,
    pivot: float = 1.0,
) -> jax.Array:
    """Sample at the entropy-adaptive temperature T(H) (see the module docstring).

    Args:
        key: a JAX PRNG key; the draw is a function of it.
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.
        base: the temperature at H = pivot, > 0; default 1.
        alpha: the log-range of the schedule (T lies in base * [e^-alpha, e^alpha]); default 0.5.
        pivot: the entropy, in nats, where T = base; default 1.

    Returns:
        int32 [...] sampled token ids (the logits' shape without the vocabulary axis).
    """
    check_positive(base, "base")
    logits = _check_logits(logits)
    t = entropy_temperature(logits, base, alpha, pivot)
    return jax.random.categorical(key, logits / t[..., None], axis=-1).astype(jnp.int32)


SAMPLER_QUADRANTS = ("confident", "rivals", "explore", "careful")


def entropy_varentropy_quadrant(
    logits: ArrayLike, h_thr: float = 1.0, v_thr: float = 1.5
) -> jax.Array:
    """Per-row quadrant index into ``SAMPLER_QUADRANTS`` from (entropy, varentropy) thresholds.

    Args:
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.
        h_thr: the entropy threshold, in nats; H >= h_thr is high; default 1.
        v_thr: the varentropy threshold, in nats^2; V >= v_thr is high; default 1.5.

    Returns:
        int32 [...] indices in 0..3, ``2 * (H >= h_thr) + (V >= v_thr)``, i.e. confident,
        rivals, explore, careful.
    """
    logits = _check_logits(logits)
    high_h = shannon_entropy(logits) >= h_thr
    high_v = varentropy(logits) >= v_thr
    return 2 * high_h.astype(jnp.int32) + high_v.astype(jnp.int32)


def entropy_varentropy(
    key: jax.Array,
    logits: ArrayLike,
    h_thr: float = 1.0,
    v_thr: float = 1.5,
    k_rivals: int = 5,
    t_explore: float = 1.2,
    t_careful: float = 0.7,
) -> jax.Array:
    """Choose greedy / top-k / min-p / top-p per row by the (entropy, varentropy) quadrant.

    Args:
        key: a JAX PRNG key; the draw is a function of it.
        logits: floating [..., V] scores (e.g. [batch, vocab]); -inf excludes a token.
        h_thr: the entropy threshold, in nats; default 1.
        v_thr: the varentropy threshold, in nats^2; default 1.5.
        k_rivals: the top-k candidates of the "rivals" quadrant, >= 1; default 5.
        t_explore: the min-p (0.05) temperature of the "explore" quadrant, > 0; default 1.2.
        t_careful: the top-p (0.9) temperature of the "careful" quadrant, > 0; default 0.7.

    Returns:
        int32 [...] sampled token ids (the logits' shape without the vocabulary axis).
    """
    logits = _check_logits(logits)
    quadrant = entropy_varentropy_quadrant(logits, h_thr, v_thr)
    k1, k2, k3 = jax.random.split(key, 3)
    candidates = jnp.stack(
        [
            greedy(None, logits),
            top_k(k1, logits, k_rivals, 1.0),
            min_p(k2, logits, 0.05, t_explore),
            top_p(k3, logits, 0.9, t_careful),
        ]
    )
    return jnp.take_along_axis(candidates, quadrant[None], axis=0)[0]


SAMPLERS = {
    "greedy": greedy,
    "temperature": temperature,
    "top_k": top_k,
    "top_p": top_p,
    "min_p": min_p,
    "adaptive_temperature": adaptive_temperature,
    "entropy_varentropy": entropy_varentropy,
}


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A named sampler with fixed parameters; calling it is ``SAMPLERS[name](key, logits, ...)``."""

    name: str
    params: tuple[tuple[str, float], ...] = ()

    def __call__(self, key: jax.Array, logits: ArrayLike) -> jax.Array:
        return SAMPLERS[self.name](key, logits, **dict(self.params))


def make_sampler(name: str = "greedy", **params: float) -> Sampler:
    """A hashable ``Sampler``; unknown names or parameters raise an error naming them.

    Args:
        name: a key of ``SAMPLERS`` (``"greedy"``, ``"temperature"``, ``"top_k"``, ``"top_p"``,
            ``"min_p"``, ``"adaptive_temperature"``, ``"entropy_varentropy"``); default greedy.
        **params: that sampler's keyword parameters (e.g. ``p=0.9``, ``temperature=0.7``);
            those left out take the sampler's defaults.

    Returns:
        A frozen ``Sampler`` holding the name and the sorted parameters, usable as a static
        argument of ``jax.jit``.

    Raises:
        ValueError: for an unknown sampler name.
        TypeError: for a parameter the sampler does not accept.
    """
    check_choice(name, "sampler", tuple(SAMPLERS))
    accepted = list(inspect.signature(SAMPLERS[name]).parameters)[2:]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(
            f"sampler {name!r} got unknown parameter(s) {unknown}; it accepts {accepted}"
        )
    return Sampler(name, tuple(sorted(params.items())))
