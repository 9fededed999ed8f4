"""Token selectors: pure functions ``batch -> bool [B, T]`` that compose with ``&``, ``|``, ``~``.

A :class:`Selector` wraps such a function. Selections never carry gradients (they are boolean).
Padding is handled by :func:`~entropix.losses.compose.compose`, which always intersects a
term's selector with ``batch.mask``; selectors that rank or take quantiles over tokens (forking
tokens, Clip-Cov, KL-Cov) rank only the valid tokens themselves.

Helpers: :func:`all_tokens`, :func:`positive_advantage` / :func:`negative_advantage`, and the
rank utilities used by the selection methods: :func:`top_k_mask` (exactly k by rank),
:func:`fraction_count` (k = max(1, floor(fraction * N))), :func:`quantile_mask` (at or above a
quantile), :func:`masked_quantile`, :func:`order_statistic` and :func:`valid_count`.

None of them sorts: the k-th largest value is found by a radix selection over order-preserving
uint32 keys of the float32 values (three histogram passes over the tokens), which on CPU is
several times faster than a sort of all B*T tokens and gives the same selection.
"""

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy.sort_keys import from_order_keys, order_keys
from entropix.losses.batch import PolicyBatch


@dataclass(frozen=True)
class Selector:
    """A named token selection ``fn(batch) -> bool [B, T]``; ``&``, ``|`` and ``~`` compose.

    ``needs``: the optional PolicyBatch fields ``fn`` reads (e.g. ``{"logits"}``; see
    ``entropix.losses.compose``), carried through the combinators.
    """

    name: str
    fn: Callable[[PolicyBatch], jax.Array]
    needs: frozenset[str] = frozenset()

    def __call__(self, batch: PolicyBatch) -> jax.Array:
        out = self.fn(batch)
        if tuple(out.shape) != tuple(batch.logp.shape):
            raise ValueError(
                f"selector {self.name!r} returned shape {tuple(out.shape)}; "
                f"expected the batch's token shape {tuple(batch.logp.shape)}"
            )
        return jax.lax.stop_gradient(out.astype(bool))

    def __and__(self, other: "Selector") -> "Selector":
        needs = self.needs | other.needs
        return Selector(f"({self.name}&{other.name})", lambda b: self(b) & other(b), needs)

    def __or__(self, other: "Selector") -> "Selector":
        needs = self.needs | other.needs
        return Selector(f"({self.name}|{other.name})", lambda b: self(b) | other(b), needs)

    def __invert__(self) -> "Selector":
        return Selector(f"~{self.name}", lambda b: ~self(b), self.needs)


def all_tokens() -> Selector:
    """Every valid token (the identity selection).

    Returns:
        A :class:`Selector` named ``"all"`` selecting ``batch.mask > 0``.
    """
    return Selector("all", lambda b: b.mask > 0)


def positive_advantage() -> Selector:
    """Tokens with advantage > 0.

    Returns:
        A :class:`Selector` named ``"adv>0"`` selecting ``batch.advantages > 0``.
    """
    return Selector("adv>0", lambda b: b.advantages > 0)


def negative_advantage() -> Selector:
    """Tokens with advantage < 0.

    Returns:
        A :class:`Selector` named ``"adv<0"`` selecting ``batch.advantages < 0``.
    """
    return Selector("adv<0", lambda b: b.advantages < 0)


def valid_count(mask: ArrayLike) -> jax.Array:
    """Number of valid tokens N = sum(mask > 0) (int32 scalar, traced).

    Args:
        mask: validity mask of any shape (bool or numeric; > 0 counts).

    Returns:
        The int32 scalar count of valid entries.
    """
    return jnp.sum(mask > 0).astype(jnp.int32)


# bits of the key resolved per round of the radix search: 2^11 histogram buckets, 3 rounds
_DIGIT_BITS = 11


def _kth_largest_key(keys, k, bits: int = 32) -> jax.Array:
    """The k-th largest of the uint32 ``keys`` (flat; ``k`` int, any shape, 1 <= k <= size;
    every key < 2**bits), by most-significant-digit radix selection: no sort.

    Each round takes the next ``_DIGIT_BITS`` bits of the answer: a histogram (scatter-add) of
    that digit over the keys that share the answer's higher bits, then the largest digit d with
    #(keys with digit > d) < k, and k drops by that count. Three rounds for 32-bit keys, each
    one pass over the keys: fewer passes (and kernel launches) than a bit-by-bit search.
    """
    flat = keys.reshape(-1)
    k = jnp.asarray(k, jnp.int32)

    def one(rank):
        prefix, remaining, done = jnp.uint32(0), rank, 0
        while done < bits:
            width = min(_DIGIT_BITS, bits - done)
            shift = bits - done - width
            digit = ((flat >> shift) & jnp.uint32((1 << width) - 1)).astype(jnp.int32)
            same_prefix = (flat >> (shift + width)) == prefix if done else jnp.ones_like(digit)
            hist = jnp.zeros(1 << width, jnp.int32).at[digit].add(same_prefix.astype(jnp.int32))
            above = jnp.cumsum(hist[::-1])[::-1] - hist  # keys with a larger digit, per digit
            chosen = jnp.sum(above >= remaining)  # above is non-increasing: the answer's digit
            remaining = remaining - above[chosen]
            prefix = (prefix << width) | chosen.astype(jnp.uint32)
            done += width
        return prefix

    return jax.vmap(one)(k.reshape(-1)).reshape(k.shape)


def top_k_mask(scores: ArrayLike, valid: ArrayLike, k: int | ArrayLike) -> jax.Array:
    """Bool mask of the ``k`` valid entries with the largest ``scores`` (any shape).

    ``k`` may be traced. Ties are broken by position (the earlier flat index wins), so the
    selection has exactly ``min(k, number valid)`` entries. Exactly the ranks of a stable
    descending argsort of the valid scores (NaN last), found without one:
    the k-th largest score by :func:`_kth_largest_key`, then, only when it is tied, the
    earliest tied positions by a second search over their indices.

    Args:
        scores: the values to rank, any shape (float; NaN ranks below every number).
        valid: mask of the same shape (> 0 valid); invalid entries are never selected.
        k: how many to select, an int or int32 scalar (may be traced); k <= 0 selects none.

    Returns:
        Bool array of ``scores.shape`` with ``min(k, number valid)`` True entries.
    """
    ok = valid.reshape(-1) > 0
    # invalid entries get key 0, below every valid one (a valid NaN gets 1, a valid -inf more)
    keys = jnp.where(ok, jnp.maximum(order_keys(scores.reshape(-1)), jnp.uint32(1)), 0)
    size = keys.size
    if size == 0:
        return jnp.zeros(scores.shape, bool)
    k = jnp.asarray(k, jnp.int32)
    threshold = _kth_largest_key(keys, jnp.clip(k, 1, size))
    above = keys > threshold
    tied = keys == threshold
    wanted = jnp.clip(k, 1, size) - jnp.sum(above)  # tied entries to take, >= 1

    def earliest_tied():
        # key size - i for tied position i (larger for earlier positions), 0 elsewhere
        index_keys = jnp.where(tied, jnp.uint32(size) - jnp.arange(size, dtype=jnp.uint32), 0)
        last = _kth_largest_key(index_keys, wanted, bits=int(size).bit_length())
        return tied & (index_keys >= last)

    take = jax.lax.cond(jnp.sum(tied) > wanted, earliest_tied, lambda: tied)
    selected = (above | take) & ok & (k > 0)
    return selected.reshape(scores.shape)


def order_statistic(values: ArrayLike, valid: ArrayLike, rank: int | ArrayLike) -> jax.Array:
    """The ``rank``-th smallest (0-based; int, any shape, traced) of ``values`` over the valid,
    non-NaN entries, as float32: ``jnp.sort(valid values)[rank]`` without the sort.

    ``rank`` must lie in [0, n) for n such entries (the result is meaningless otherwise).

    Args:
        values: the values, any shape (cast to float32; NaN entries are skipped).
        valid: mask of the same shape (> 0 valid).
        rank: 0-based rank from the smallest, an int or int array of any shape (may be traced).

    Returns:
        Float32 array of ``rank``'s shape: the order statistic for each rank.
    """
    x = jnp.asarray(values, jnp.float32).reshape(-1)
    ok = (valid.reshape(-1) > 0) & ~jnp.isnan(x)
    keys = jnp.where(ok, order_keys(x), jnp.uint32(0))  # 0 is below every valid key
    n = jnp.sum(ok).astype(jnp.int32)
    return from_order_keys(_kth_largest_key(keys, n - jnp.asarray(rank, jnp.int32)))


def masked_quantile(values: ArrayLike, valid: ArrayLike, q: float | ArrayLike) -> jax.Array:
    """The ``q`` quantile of ``values`` over the valid, non-NaN entries, float32: the same number
    as ``jnp.nanquantile(where(valid, values, nan), q)`` (numpy's default linear interpolation
    between order statistics, same arithmetic), NaN when none is valid. ``q`` may be a float
    (a scalar result) or a sequence of them (one result each, from one shared search): one
    :func:`order_statistic` search for the lower order statistics, one pass for the next.

    Args:
        values: the values, any shape (cast to float32; NaN entries are skipped).
        valid: mask of the same shape (> 0 valid).
        q: quantile level(s) in [0, 1], a float or a 1-D sequence of them.

    Returns:
        Float32 array of ``q``'s shape (a scalar for a float ``q``); NaN when nothing is valid.
    """
    x = jnp.asarray(values, jnp.float32).reshape(-1)
    ok = (valid.reshape(-1) > 0) & ~jnp.isnan(x)
    count = jnp.sum(ok, dtype=jnp.float32)
    pos = jnp.asarray(q, jnp.float32) * (count - 1)
    low, high = jnp.floor(pos), jnp.ceil(pos)
    high_weight = pos - low
    low_weight = 1 - high_weight
    top = jnp.maximum(count - 1, 0)
    low_value = order_statistic(x, ok, jnp.clip(low, 0, top).astype(jnp.int32))
    # order statistic high (= low or low + 1): low_value again while it repeats, else the next
    lv = low_value[..., None]
    repeats = jnp.sum(ok & (x <= lv), axis=-1) > jnp.clip(high, 0, top).astype(jnp.int32)
    next_value = jnp.min(jnp.where(ok & (x > lv), x, jnp.inf), axis=-1)
    high_value = jnp.where(repeats, low_value, next_value)
    result = low_value * low_weight + high_value * high_weight
    return jnp.where(count > 0, result, jnp.nan)


def fraction_count(fraction: float | ArrayLike, n: jax.Array) -> jax.Array:
    """k = max(1, floor(fraction * n)) as int32 (0 when n = 0): how many tokens a ratio picks.

    Args:
        fraction: share of the tokens to pick, in [0, 1] (a float or float scalar array).
        n: integer scalar array, the number of valid tokens (e.g. :func:`valid_count`).

    Returns:
        The int32 scalar count k.
    """
    k = jnp.floor(jnp.float32(fraction) * n.astype(jnp.float32)).astype(jnp.int32)
    return jnp.where(n > 0, jnp.maximum(k, 1), 0)


def quantile_mask(values: ArrayLike, valid: ArrayLike, q: float | ArrayLike) -> jax.Array:
    """Bool mask of valid entries with ``values >= quantile_q(values over valid)``.

    The quantile interpolates linearly between order statistics (numpy's default method),
    computed over the valid entries only; nothing is selected when nothing is valid.

    Args:
        values: the values, any shape (cast to float32).
        valid: mask of the same shape (> 0 valid); invalid entries are never selected.
        q: quantile level in [0, 1] (float or float scalar array).

    Returns:
        Bool array of ``values.shape``.
    """
    valid = valid > 0
    x = jnp.asarray(values, jnp.float32)
    return valid & (x >= masked_quantile(x, valid, q))
