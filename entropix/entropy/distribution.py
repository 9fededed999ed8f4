"""Entropies of categorical distributions given by logits over the last axis.

Everything is computed in float32 from ``log_softmax(logits / temperature)``, so bf16 inputs,
huge logits and ``-inf`` (masked) logits are all handled; probabilities of exactly 0 contribute 0.

Formulas (p = softmax(z / T), V = number of classes):

* Shannon   H(p)      = -sum_i p_i log p_i                                  in [0, log V]
* Tsallis   S_q(p)    = (1 - sum_i p_i^q) / (q - 1)
                      = -expm1(LSE_i(q log p_i)) / (q - 1)                   (q > 0; -> H as q -> 1)
  "Possible generalization of Boltzmann-Gibbs statistics", Tsallis 1988.
* Renyi     H_a(p)    = LSE_i(a log p_i) / (1 - a)                     (a >= 0; -> H as a -> 1)
            H_inf(p)  = -log max_i p_i   (min-entropy)
  "On measures of entropy and information", Renyi 1961.
* Varentropy V(p)     = sum_i p_i (log p_i + H(p))^2 = Var_{i~p}[-log p_i]
  (the "entropix" sampler's second signal; "Optimal Lossless Data Compression: Non-Asymptotics
  and Asymptotics", Kontoyiannis & Verdu 2014, for the name).

Near q = 1 (and a = 1) the closed forms divide two vanishing numbers. For |q - 1| < 0.01 we use
the algebraically identical form  sum_i p_i^q - 1 = sum_i p_i expm1((q - 1) log p_i),  which has
no cancellation: S_q = -sum_i p_i expm1(d log p_i) / d and
H_a = -log1p(sum_i p_i expm1(d log p_i)) / d
with d = q - 1 (resp. a - 1); both tend to H(p) smoothly and are exact at d = 0.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.validation import check_floating, check_min_rank

_NEAR_ONE = 1e-2


def _scaled(logits, temperature):
    """logits / temperature in float32, after checking the logits are floating [..., classes]."""
    check_floating(logits, "logits")
    check_min_rank(logits, "logits", 1, "[..., classes]")
    return jnp.asarray(logits, jnp.float32) / temperature


def log_softmax(logits: ArrayLike, temperature: float | jax.Array = 1.0) -> jax.Array:
    """log softmax(logits / temperature) over the last axis, in float32.

    Args:
        logits: floating [..., V] scores (any float dtype; -inf marks an excluded class).
        temperature: divides the logits before the softmax; default 1.0.

    Returns:
        float32 [..., V] log-probabilities (-inf where the logit is -inf).
    """
    return jax.nn.log_softmax(_scaled(logits, temperature), axis=-1)


def _p_and_logp(logits, temperature):
    logp = log_softmax(logits, temperature)
    p = jnp.exp(logp)
    # Zero-probability classes (masked with -inf) contribute 0 to every sum below; replacing
    # their log p by 0 keeps 0 * (-inf) out of values and gradients.
    return p, jnp.where(p > 0, logp, 0.0)


def entropy_from_probs(probs: ArrayLike, axis: int = -1) -> jax.Array:
    """Shannon entropy -sum p log p of probability vectors (0 log 0 = 0), float32.

    Args:
        probs: floating probabilities, each vector along ``axis`` summing to 1 (not checked).
        axis: the class axis; default the last.

    Returns:
        float32 entropies in nats, the shape of ``probs`` without ``axis``.
    """
    check_floating(probs, "probs")
    p = jnp.asarray(probs, jnp.float32)
    safe = jnp.where(p > 0, p, 1.0)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(safe), 0.0), axis=axis)


def shannon_entropy(logits: ArrayLike, temperature: float | jax.Array = 1.0) -> jax.Array:
    """Shannon entropy H = -sum p log p of softmax(logits / T) over the last axis (nats).

    Derivative in u = logits / T (a custom JVP, one pass in forward or reverse mode):
    dH = -sum_i p_i (log p_i + H) du_i; classes with p_i = 0 (-inf logits) contribute 0.

    Args:
        logits: floating [..., V] scores (e.g. [batch, time, vocab]); -inf excludes a class.
        temperature: T, divides the logits; default 1.0.

    Returns:
        float32 [...] entropies in nats, in [0, log V].
    """
    return _shannon(_scaled(logits, temperature))


@jax.custom_jvp
def _shannon(u):
    """-sum p log p for p = softmax(u) over the last axis (0 log 0 = 0)."""
    return _shannon_parts(u)[0]


def _shannon_parts(u):
    p, logp = _p_and_logp(u, 1.0)
    return -jnp.sum(p * logp, axis=-1), p, logp


@_shannon.defjvp
def _shannon_jvp(primals, tangents):
    (u,), (du,) = primals, tangents
    entropy, p, logp = _shannon_parts(u)
    return entropy, entropy_tangent(p, logp, entropy, du)


def entropy_tangent(p: jax.Array, logp: jax.Array, entropy: jax.Array, du: jax.Array) -> jax.Array:
    """dH = -sum_i p_i (log p_i + H) du_i: the tangent of the entropy H of p = softmax(u).

    Classes with p_i = 0 contribute 0 whatever du_i is (a -inf logit's tangent may be inf or
    NaN). Shared by the custom JVPs of :func:`shannon_entropy` and of the top-p entropy.

    Args:
        p: float32 [..., V] probabilities.
        logp: float32 [..., V] their logs (any finite value where p = 0).
        entropy: float32 [...] the entropy H of ``p``.
        du: [..., V] tangent of the logits u.

    Returns:
        float32 [...] the entropy's tangent dH.
    """
    slope = p * (logp + entropy[..., None])
    return -jnp.sum(jnp.where(p > 0, slope * du, 0.0), axis=-1)


def varentropy(logits: ArrayLike, temperature: float | jax.Array = 1.0) -> jax.Array:
    """Varentropy sum p (log p + H)^2: the variance of the surprisal -log p under p.

    Args:
        logits: floating [..., V] scores; -inf excludes a class.
        temperature: divides the logits before the softmax; default 1.0.

    Returns:
        float32 [...] varentropies in nats^2 (>= 0).
    """
    p, logp = _p_and_logp(logits, temperature)
    h = -jnp.sum(p * logp, axis=-1, keepdims=True)
    return jnp.sum(p * (logp + h) ** 2, axis=-1)


def _series_safe(fn, series, u):
    """fn(u) for |u| >= 1e-4, its Taylor series below (exact value and derivative at u = 0)."""
    small = jnp.abs(u) < 1e-4
    u_safe = jnp.where(small, 1.0, u)
    return jnp.where(small, series(u), fn(u_safe))


def _exprel(u):
    """expm1(u) / u, equal to 1 + u/2 + u^2/6 + ... near 0."""
    return _series_safe(lambda v: jnp.expm1(v) / v, lambda v: 1 + v / 2 + v * v / 6, u)


def _log1prel(u):
    """log1p(u) / u, equal to 1 - u/2 + u^2/3 - ... near 0."""
    return _series_safe(lambda v: jnp.log1p(v) / v, lambda v: 1 - v / 2 + v * v / 3, u)


def _moment_expm1(p, logp, d):
    """sum_i p_i expm1(d log p_i) / d  (= sum p log p at d = 0), without cancellation."""
    return jnp.sum(p * logp * _exprel(d * logp), axis=-1)


def tsallis_entropy(
    logits: ArrayLike, q: float | jax.Array, temperature: float | jax.Array = 1.0
) -> jax.Array:
    """Tsallis entropy S_q = (1 - sum p^q) / (q - 1) of softmax(logits / T); q > 0.

    Stable form -expm1(LSE(q log p)) / (q - 1) away from q = 1 and a cancellation-free series
    form near it (see the module docstring). ``q`` may be a Python float or a traced scalar.

    Args:
        logits: floating [..., V] scores; -inf excludes a class.
        q: the entropic index, > 0 (a Python number <= 0 raises ValueError); q -> 1 gives
            Shannon.
        temperature: divides the logits before the softmax; default 1.0.

    Returns:
        float32 [...] Tsallis entropies.
    """
    if isinstance(q, int | float) and q <= 0:
        raise ValueError(f"Tsallis index q must be > 0; got {q}")
    p, logp = _p_and_logp(logits, temperature)
    q = jnp.asarray(q, jnp.float32)
    d = q - 1.0
    near = jnp.abs(d) < _NEAR_ONE
    d_far = jnp.where(near, 1.0, d)
    lse = jax.nn.logsumexp(jnp.where(p > 0, q * logp, -jnp.inf), axis=-1)
    far = -jnp.expm1(lse) / d_far
    return jnp.where(near, -_moment_expm1(p, logp, jnp.where(near, d, 0.0)), far)


def renyi_entropy(
    logits: ArrayLike, alpha: float | jax.Array, temperature: float | jax.Array = 1.0
) -> jax.Array:
    """Renyi entropy H_a = LSE(a log p) / (1 - a) of softmax(logits / T); a >= 0, a = inf allowed.

    a = 0 gives log |support|, a -> 1 gives Shannon, a = inf gives -log max p (pass
    ``float('inf')``). Non-increasing in a.

    Args:
        logits: floating [..., V] scores; -inf excludes a class.
        alpha: the order a >= 0 (a Python number < 0 raises ValueError), a Python float or a
            traced scalar; ``float('inf')`` (Python only) gives the min-entropy.
        temperature: divides the logits before the softmax; default 1.0.

    Returns:
        float32 [...] Renyi entropies in nats.
    """
    if isinstance(alpha, int | float):
        if alpha < 0:
            raise ValueError(f"Renyi order alpha must be >= 0; got {alpha}")
        if alpha == float("inf"):
            return -jnp.max(log_softmax(logits, temperature), axis=-1)
    p, logp = _p_and_logp(logits, temperature)
    alpha = jnp.asarray(alpha, jnp.float32)
    d = alpha - 1.0
    near = jnp.abs(d) < _NEAR_ONE
    d_far = jnp.where(near, 1.0, d)
    lse = jax.nn.logsumexp(jnp.where(p > 0, alpha * logp, -jnp.inf), axis=-1)
    far = -lse / d_far
    d_near = jnp.where(near, d, 0.0)
    moment = _moment_expm1(p, logp, d_near)  # E[expm1(d log p)] / d
    near_value = -moment * _log1prel(d_near * moment)  # -log1p(d * moment) / d
    return jnp.where(near, near_value, far)
