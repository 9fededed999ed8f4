"""Key/value cache for incremental decoding: a functional pytree threaded through the forward.

Layout: ``k``, ``v`` are [layers, batch, slots, kv_heads, head_dim]; slot s of every row holds the
token fed at step s (all rows advance in lockstep). ``valid`` [batch, slots] marks slots that hold
real tokens (False for left padding and for slots not written yet); ``length`` (int32 scalar)
is the number of slots written. A forward with T new tokens writes slots [length, length + T)
and its queries attend to written, valid slots at or before their own slot.
"""

import jax
import jax.numpy as jnp
from flax import struct
from jax.typing import ArrayLike, DTypeLike

from entropix.validation import check_positive


@struct.dataclass
class KVCache:
    """Per-layer keys and values of the tokens seen so far (see the module docstring)."""

    k: jnp.ndarray
    v: jnp.ndarray
    valid: jnp.ndarray
    length: jnp.ndarray

    @classmethod
    def init(
        cls,
        num_layers: int,
        batch: int,
        max_len: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: DTypeLike = jnp.float32,
    ) -> "KVCache":
        """An empty cache with room for ``max_len`` tokens per row.

        Args:
            num_layers: decoder layers (one k/v slab each).
            batch: rows decoded together (> 0).
            max_len: slots per row, prompt plus generated tokens (> 0).
            num_kv_heads: key/value heads per layer.
            head_dim: size of each head.
            dtype: dtype of ``k`` and ``v``; default float32.

        Returns:
            A cache with zero ``k``, ``v`` [num_layers, batch, max_len, num_kv_heads, head_dim],
            all-False ``valid`` [batch, max_len] and ``length`` 0.
        """
        for value, name in ((batch, "batch"), (max_len, "max_len")):
            check_positive(value, name)
        shape = (num_layers, batch, max_len, num_kv_heads, head_dim)
        return cls(
            k=jnp.zeros(shape, dtype),
            v=jnp.zeros(shape, dtype),
            valid=jnp.zeros((batch, max_len), bool),
            length=jnp.zeros((), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def next_positions(self, new_mask: ArrayLike) -> jax.Array:
        """RoPE positions for new tokens: count of valid cached tokens + running count - 1.

        Args:
            new_mask: [batch, T] bool (or 0/1), True for the real (non-padding) new tokens.

        Returns:
            int32 [batch, T] positions; a padding token gets the position of the last real token
            before it (seen - 1 when there is none).
        """
        seen = jnp.sum(self.valid, axis=-1, dtype=jnp.int32)[:, None]
        return seen + jnp.cumsum(new_mask.astype(jnp.int32), axis=-1) - 1
