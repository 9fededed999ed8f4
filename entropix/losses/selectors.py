"""Token selectors: pure functions ``batch -> bool [B, T]`` that compose with ``&``, ``|``, ``~``.

A :class:`Selector` wraps such a function. Selections never carry gradients (they are boolean).
Padding is handled by :func:`~entropix.losses.compose.compose`, which always intersects a
term's selector with ``batch.mask``; selectors that rank or take quantiles over tokens (forking
tokens, Clip-Cov, KL-Cov) rank only the valid tokens themselves.

Helpers: :func:`all_tokens`, :func:`positive_advantage` / :func:`negative_advantage`, and the
rank utilities used by the selection methods: :func:`top_k_mask` (exactly k by rank),
:func:`fraction_count` (k = max(1, floor(fraction * N))), :func:`quantile_mask` (at or above a
quantile) and :func:`valid_count`.
"""

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from entropix.losses.batch import PolicyBatch


@dataclass(frozen=True)
class Selector:
    """A named token selection ``fn(batch) -> bool [B, T]``; ``&``, ``|`` and ``~`` compose."""

    name: str
    fn: Callable[[PolicyBatch], jax.Array]

    def __call__(self, batch: PolicyBatch) -> jax.Array:
        out = self.fn(batch)
        if tuple(out.shape) != tuple(batch.logp.shape):
            raise ValueError(
                f"selector {self.name!r} returned shape {tuple(out.shape)}; "
                f"expected the batch's token shape {tuple(batch.logp.shape)}"
            )
        return jax.lax.stop_gradient(out.astype(bool))

    def __and__(self, other: "Selector") -> "Selector":
        return Selector(f"({self.name}&{other.name})", lambda b: self(b) & other(b))

    def __or__(self, other: "Selector") -> "Selector":
        return Selector(f"({self.name}|{other.name})", lambda b: self(b) | other(b))

    def __invert__(self) -> "Selector":
        return Selector(f"~{self.name}", lambda b: ~self(b))


def all_tokens() -> Selector:
    """Every valid token (the identity selection)."""
    return Selector("all", lambda b: b.mask > 0)


def positive_advantage() -> Selector:
    """Tokens with advantage > 0."""
    return Selector("adv>0", lambda b: b.advantages > 0)


def negative_advantage() -> Selector:
    """Tokens with advantage < 0."""
    return Selector("adv<0", lambda b: b.advantages < 0)


def valid_count(mask) -> jax.Array:
    """Number of valid tokens N = sum(mask > 0) (int32 scalar, traced)."""
    return jnp.sum(mask > 0).astype(jnp.int32)


def top_k_mask(scores, valid, k) -> jax.Array:
    """Bool mask of the ``k`` valid entries with the largest ``scores`` (any shape).

    ``k`` may be traced. Ties are broken by position (the earlier flat index wins), so the
    selection has exactly ``min(k, number valid)`` entries.
    """
    flat = jnp.where(valid.reshape(-1) > 0, scores.reshape(-1).astype(jnp.float32), -jnp.inf)
    order = jnp.argsort(-flat, stable=True)
    rank = jnp.empty_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
    selected = (rank < k) & (valid.reshape(-1) > 0)
    return selected.reshape(scores.shape)


def fraction_count(fraction, n) -> jax.Array:
    """k = max(1, floor(fraction * n)) as int32 (0 when n = 0): how many tokens a ratio picks."""
    k = jnp.floor(jnp.float32(fraction) * n.astype(jnp.float32)).astype(jnp.int32)
    return jnp.where(n > 0, jnp.maximum(k, 1), 0)


def quantile_mask(values, valid, q) -> jax.Array:
    """Bool mask of valid entries with ``values >= quantile_q(values over valid)``.

    The quantile interpolates linearly between order statistics (numpy's default method),
    computed over the valid entries only; nothing is selected when nothing is valid.
    """
    valid = valid > 0
    x = jnp.asarray(values, jnp.float32)
    threshold = jnp.nanquantile(jnp.where(valid, x, jnp.nan), q)
    return valid & (x >= threshold)
