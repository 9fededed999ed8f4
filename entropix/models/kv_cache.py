"""Key/value cache for incremental decoding: a functional pytree threaded through the forward.

Layout: ``k``, ``v`` are [layers, batch, slots, kv_heads, head_dim]; slot s of every row holds the
token fed at step s (all rows advance in lockstep). ``valid`` [batch, slots] marks slots that hold
real tokens (False for left padding and for slots not written yet); ``length`` (int32 scalar)
is the number of slots written. A forward with T new tokens writes slots [length, length + T)
and its queries attend to written, valid slots at or before their own slot.
"""

import jax.numpy as jnp
from flax import struct

from entropix.validation import check_positive


@struct.dataclass
class KVCache:
    """Per-layer keys and values of the tokens seen so far (see the module docstring)."""

    k: jnp.ndarray
    v: jnp.ndarray
    valid: jnp.ndarray
    length: jnp.ndarray

    @classmethod
    def init(cls, num_layers, batch, max_len, num_kv_heads, head_dim, dtype=jnp.float32):
        """An empty cache with room for ``max_len`` tokens per row."""
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

    def next_positions(self, new_mask):
        """RoPE positions for new tokens: count of valid cached tokens + running count - 1."""
        seen = jnp.sum(self.valid, axis=-1, dtype=jnp.int32)[:, None]
        return seen + jnp.cumsum(new_mask.astype(jnp.int32), axis=-1) - 1
