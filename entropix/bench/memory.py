"""XLA's temporary-memory figure of a compiled program.

``compiled.memory_analysis().temp_size_in_bytes`` is the scratch memory XLA's buffer assignment
reserves for intermediates of the whole program (arguments and outputs excluded): for the naive
log-prob/entropy path it includes the [tokens, vocab] logits, for the fused path only [tokens,
chunk] blocks. It is a static figure from the compiler, so it is exact and noise-free.
"""

import jax


def temp_bytes(compiled: jax.stages.Compiled) -> int | None:
    """Temporary bytes of a compiled executable, or None when the backend gives no analysis.

    Args:
        compiled: a compiled program (``jax.jit(f).lower(...).compile()``).

    Returns:
        ``temp_size_in_bytes`` of its memory analysis, or None.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes)
