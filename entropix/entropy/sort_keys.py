"""Order-preserving uint32 keys of float32 values.

Sorting or selecting by these integer keys gives the order of the floats (descending
``jnp.sort`` conventions: -0.0 equals 0.0, NaN below -inf) and is several times faster on CPU
than comparing floats. Used by the top-p nucleus (``entropix.entropy.nucleus``) and the token
selections (``entropix.losses.selectors``).
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def order_keys(values: ArrayLike) -> jax.Array:
    """uint32 keys in the order of float32 ``values``: -0.0 and 0.0 get the same key and NaN
    the lowest key 0, below -inf (as a descending ``jnp.sort`` / ``jnp.argsort`` places it).

    Args:
        values: float values of any shape (cast to float32).

    Returns:
        uint32 keys, the shape of ``values``: key(a) < key(b) <=> a < b.
    """
    x = jnp.asarray(values, jnp.float32)
    bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.uint32)
    keys = jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))
    return jnp.where(jnp.isnan(x), jnp.uint32(0), keys)


def from_order_keys(keys: ArrayLike) -> jax.Array:
    """Inverse of :func:`order_keys` on the keys of non-NaN values (float32).

    Args:
        keys: uint32 keys from :func:`order_keys`, any shape.

    Returns:
        float32 values, the shape of ``keys`` (0.0 for the key of -0.0).
    """
    bits = jnp.where(keys >> 31 == 1, keys & jnp.uint32((1 << 31) - 1), ~keys)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)
