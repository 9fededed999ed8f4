"""Input checks shared by every public entry point.

Shapes and dtypes are static under ``jax.jit``, so these checks run once at trace time
and cost nothing in the compiled program. They raise ``ValueError`` / ``TypeError``
with a message that names the argument, what was expected and what was received.

chex is not a dependency: its shape and dtype assertions say no more than these checks at our
public boundaries, and their messages do not name the argument or the config key a user has
to change (tests/test_layering.py keeps the declared dependencies equal to the imported ones).
"""

from collections.abc import Mapping, Sequence
from typing import TypeVar

import jax.numpy as jnp
from jax.typing import ArrayLike

T = TypeVar("T")


def _shape_of(x) -> tuple[int, ...]:
    return tuple(jnp.shape(x))


def check_floating(x: ArrayLike, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has a floating dtype (fp16/bf16/fp32/fp64).

    Args:
        x: the array (or array-like) to check.
        name: the argument's name, for the message.
    """
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a floating-point array (got dtype {dtype}); "
            f"cast it first, e.g. {name}.astype(jnp.float32)"
        )


def check_rank(x: ArrayLike, name: str, ranks: int | Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is ``ranks`` (or one of them).

    Args:
        x: the array to check.
        name: the argument's name, for the message.
        ranks: the allowed rank, or a sequence of allowed ranks.
    """
    allowed = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    shape = _shape_of(x)
    if len(shape) not in allowed:
        want = " or ".join(str(r) for r in allowed)
        raise ValueError(f"{name} must have rank {want}; got shape {shape} (rank {len(shape)})")


def check_min_rank(x: ArrayLike, name: str, min_rank: int, layout: str = "") -> None:
    """Raise ``ValueError`` unless ``x.ndim >= min_rank``; ``layout`` documents the axes.

    Args:
        x: the array to check.
        name: the argument's name, for the message.
        min_rank: the smallest allowed rank.
        layout: the expected axes for the message, e.g. ``"[..., classes]"``; default none.
    """
    shape = _shape_of(x)
    if len(shape) < min_rank:
        hint = f" laid out as {layout}" if layout else ""
        raise ValueError(
            f"{name} must have rank >= {min_rank}{hint}; got shape {shape} (rank {len(shape)})"
        )


def check_shape(x: ArrayLike, name: str, expected: Sequence[int | None]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``expected`` (``None`` = any size).

    Args:
        x: the array to check.
        name: the argument's name, for the message.
        expected: the shape, one entry per axis; None matches any size.
    """
    shape = _shape_of(x)
    ok = len(shape) == len(expected) and all(
        e is None or e == s for e, s in zip(expected, shape, strict=True)
    )
    if not ok:
        want = ", ".join("?" if e is None else str(e) for e in expected)
        want = f"({want},)" if len(expected) == 1 else f"({want})"
        raise ValueError(f"{name} must have shape {want} (? = any size); got {shape}")


def check_mask(mask: ArrayLike, name: str, shape: Sequence[int]) -> None:
    """A mask must be bool or floating and have exactly ``shape`` (no silent broadcasting).

    Raises ``TypeError`` for another dtype, ``ValueError`` for another shape.

    Args:
        mask: the mask to check, e.g. [batch, time].
        name: the argument's name, for the message.
        shape: the shape of the values it masks.
    """
    dtype = jnp.result_type(mask)
    if not (dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.floating)):
        raise TypeError(f"{name} must be bool or floating (got dtype {dtype})")
    if _shape_of(mask) != tuple(shape):
        raise ValueError(
            f"{name} has shape {_shape_of(mask)} but must match the values it masks, "
            f"shape {tuple(shape)}"
        )


def check_positive(value: float, name: str) -> None:
    """Raise ``ValueError`` unless a static Python number is > 0.

    Args:
        value: the number (int or float).
        name: the argument's name, for the message.
    """
    if not value > 0:
        raise ValueError(f"{name} must be > 0; got {value}")


def check_fraction(value: float, name: str) -> None:
    """Raise ``ValueError`` unless a static Python number lies in (0, 1].

    Args:
        value: the number.
        name: the argument's name, for the message.
    """
    check_positive(value, name)
    if value > 1:
        raise ValueError(f"{name} must be in (0, 1]; got {value}")


def check_choice(value: str, name: str, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the valid choices when ``value`` is not one of them.

    Args:
        value: the given choice.
        name: the argument's name, for the message.
        choices: the valid choices.
    """
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def lookup(registry: Mapping[str, T], name: str, what: str) -> T:
    """``registry[name]``; an unknown name raises ``KeyError`` naming the closest keys.

    Args:
        registry: the mapping to look in.
        name: the key.
        what: what the entries are, for the message (e.g. ``"controller"``).

    Returns:
        The entry ``registry[name]``.
    """
    if name not in registry:
        import difflib

        close = difflib.get_close_matches(str(name), [str(k) for k in registry], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown {what} {name!r}{hint}")
    return registry[name]
