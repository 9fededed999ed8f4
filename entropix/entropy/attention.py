"""Per-head attention entropy: how spread out each query's attention is over the keys.

For attention probabilities A[b, h, q, k] (rows sum to 1 over the allowed keys):

    H[b, h, q] = -sum_k A[b, h, q, k] log A[b, h, q, k]          in [0, log n_q]

where n_q is the number of keys query q may attend to (q + 1 under a causal mask). Low values
mean attention concentrated on few keys; "attention entropy collapse" (Zhai et al. 2023,
"Stabilizing Transformer Training by Preventing Attention Entropy Collapse") is the fall of these
values towards 0 that precedes training instability. ``normalized=True`` divides by log n_q so
heads at different positions compare on [0, 1] (a query with a single key gets 0).
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy.distribution import entropy_from_probs
from entropix.validation import check_floating, check_rank


def causal_mask(num_queries: int, num_keys: int | None = None) -> jax.Array:
    """Boolean [Tq, Tk] mask, True where query i may attend key j (j <= i + Tk - Tq).

    Args:
        num_queries: Tq, the number of queries (the last Tq positions of the keys).
        num_keys: Tk, the number of keys; default Tq.

    Returns:
        bool [Tq, Tk] mask, True = may attend.
    """
    num_keys = num_queries if num_keys is None else num_keys
    offset = num_keys - num_queries
    return jnp.arange(num_keys)[None, :] <= jnp.arange(num_queries)[:, None] + offset


def attention_entropy(
    probs_or_scores: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    from_scores: bool = False,
    causal: bool = False,
    normalized: bool = False,
) -> jax.Array:
    """Per-head attention entropy [B, H, Tq] from probabilities or raw scores [B, H, Tq, Tk].

    Formula: H[b, h, q] = -sum_k A[b, h, q, k] log A[b, h, q, k]. Paper: "Stabilizing
    Transformer Training by Preventing Attention Entropy Collapse" (Zhai et al. 2023).

    ``mask`` and ``causal`` restrict the keys. With ``from_scores=True`` masked scores are
    excluded before the softmax; with probabilities, masked entries are ignored (they should
    already be 0). Rows with no allowed key have entropy 0.

    Args:
        probs_or_scores: floating [B, H, Tq, Tk] attention probabilities (rows summing to 1
            over the allowed keys) or, with ``from_scores``, pre-softmax scores q.k / sqrt(d).
        mask: bool, broadcastable to [B, H, Tq, Tk], True = may attend; default all keys.
        from_scores: the input is scores, softmaxed here over the allowed keys; default False.
        causal: also restrict query i to keys j <= i + Tk - Tq (:func:`causal_mask`);
            default False.
        normalized: divide by log(number of allowed keys), giving [0, 1] (0 for a single
            key); default False.

    Returns:
        float32 [B, H, Tq] entropies in nats (or normalised).
    """
    check_floating(probs_or_scores, "probs_or_scores")
    check_rank(probs_or_scores, "probs_or_scores", 4)
    x = jnp.asarray(probs_or_scores, jnp.float32)
    tq, tk = x.shape[-2:]
    allowed = jnp.ones((tq, tk), bool)
    if causal:
        allowed = causal_mask(tq, tk)
    if mask is not None:
        if jnp.result_type(mask) != jnp.bool_:
            raise TypeError(f"attention mask must be bool (True = may attend); got {mask.dtype}")
        try:
            allowed = allowed & jnp.broadcast_to(mask, jnp.broadcast_shapes(mask.shape, x.shape))
        except ValueError as error:
            raise ValueError(
                f"attention mask of shape {mask.shape} does not broadcast to {x.shape}"
            ) from error
    allowed = jnp.broadcast_to(allowed, x.shape)
    if from_scores:
        probs = jax.nn.softmax(jnp.where(allowed, x, -jnp.inf), axis=-1)
        probs = jnp.where(allowed, probs, 0.0)  # rows with no key give NaN softmax -> 0
    else:
        probs = jnp.where(allowed, x, 0.0)
    h = entropy_from_probs(probs)
    if normalized:
        n_keys = jnp.sum(allowed, axis=-1).astype(jnp.float32)
        h = jnp.where(n_keys > 1, h / jnp.log(jnp.maximum(n_keys, 2.0)), 0.0)
    return h
