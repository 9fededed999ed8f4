"""Entropic activation steering (EAST): shift a decoder's residual stream along an entropy
direction to make its next-token (action) distribution more or less uncertain.

Paper: "Controlling Large Language Model Agents with Entropic Activation Steering" (Rahn,
D'Oro and Bellemare, 2024). LLM agents commit to actions too early; token temperature does
not fix it, but the residual stream holds a direction along which the action entropy grows.
EAST finds it from logged states and adds ``alpha * v`` to the activations of one layer during
generation.

    states = residual_activations(model, tokens, mask, layer)     # [B, T, D] after the block
    v = entropy_direction(states[rows, last], next_token_entropy)  # [D]
    steered = SteeredLlama(model, v, layer, alpha=2.0)             # an nnx.Module like Llama
    entropix.rollout.generate(steered, prompts, ...)               # steered generation

The hook point is ``Llama.__call__(..., residual_hook=...)``: ``(layer, x) -> x`` applied to
the residual stream after each block; without a hook the forward is unchanged. The vector and
alpha are ``SteeringVector`` variables (not ``nnx.Param``), so optimisers over parameters never
move them and a new alpha does not recompile a jitted generation.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from entropix.losses.registry import register
from entropix.models.kv_cache import KVCache
from entropix.models.llama import Llama
from entropix.validation import check_rank, check_shape


class SteeringVector(nnx.Variable):
    """A fixed steering quantity of a :class:`SteeredLlama` (not a trainable parameter)."""


def residual_activations(
    model: Llama,
    tokens: ArrayLike,
    attention_mask: ArrayLike | None = None,
    layer: int = 0,
) -> jax.Array:
    """The residual stream after block ``layer`` of ``model`` on ``tokens``: [B, T, D] float32.

    Args:
        model: the decoder to read (run once, without logits).
        tokens: int [B, T] token ids.
        attention_mask: optional bool/float [B, T], 1 for real tokens, 0 for padding; None for
            all real.
        layer: the block whose output is captured, in [0, num_layers); default 0.

    Returns:
        float32 [B, T, D] residual stream after block ``layer`` (every position, padding
        included).
    """
    _check_layer(model, layer)
    captured = {}

    def capture(index, x):
        if index == layer:
            captured["x"] = x
        return x

    model(tokens, attention_mask=attention_mask, return_logits=False, residual_hook=capture)
    return jnp.asarray(captured["x"], jnp.float32)


def entropy_direction(states: ArrayLike, entropy: ArrayLike, quantile: float = 0.5) -> jax.Array:
    """Difference of means between high- and low-entropy states: v [D].

    Formula:
        tau = quantile_q(H);  high = {i : H_i > tau};  low = {i : H_i <= tau}
        v = mean_{i in high} h_i - mean_{i in low} h_i
    ``states`` [N, D] activations, ``entropy`` [N] the next-token entropy at each state.

    Args:
        states: [N, D] residual-stream activations h_i (means taken in float64 on the host).
        entropy: [N] next-token (action) entropy H_i at each state, in nats.
        quantile: q in [0, 1], the split point tau of the entropies; default 0.5 (the median).

    Returns:
        float32 [D] direction v, not normalised. Raises ``ValueError`` when one side is empty.
    """
    check_rank(states, "states", 2)
    check_shape(entropy, "entropy", (states.shape[0],))
    h = np.asarray(entropy, np.float64)
    tau = np.quantile(h, quantile)
    high, low = h > tau, h <= tau
    if not high.any() or not low.any():
        raise ValueError(
            f"entropy_direction: the {quantile} quantile leaves no state on one side "
            "(all entropies equal?); log states with different action entropies"
        )
    x = np.asarray(states, np.float64)
    return jnp.asarray(x[high].mean(axis=0) - x[low].mean(axis=0), jnp.float32)


def _check_layer(model, layer: int) -> None:
    layers = model.config.num_layers
    if not isinstance(layer, int) or not 0 <= layer < layers:
        raise ValueError(f"layer must be an integer in [0, {layers}); got {layer!r}")


class SteeredLlama(nnx.Module):
    """``model`` with ``alpha * vector`` added to the residual stream after block ``layer`` at
    every position (prompt and generated tokens); called like :class:`~entropix.models.Llama`."""

    def __init__(self, model: Llama, vector: ArrayLike, layer: int, alpha: float = 1.0):
        _check_layer(model, layer)
        check_shape(vector, "vector", (model.config.dim,))
        self.model, self.layer, self.config = model, layer, model.config
        self.vector = SteeringVector(jnp.asarray(vector, jnp.float32))
        self.alpha = SteeringVector(jnp.asarray(alpha, jnp.float32))

    def _hook(self, index, x):
        if index != self.layer:
            return x
        return x + (self.alpha.value * self.vector.value).astype(x.dtype)

    def __call__(self, tokens, **kwargs):
        return self.model(tokens, residual_hook=self._hook, **kwargs)

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty KV cache of the wrapped model (see :meth:`Llama.init_cache`).

        Args:
            batch: rows decoded together (> 0).
            max_len: slots per row, prompt plus generated tokens (> 0).

        Returns:
            The wrapped model's empty :class:`KVCache`.
        """
        return self.model.init_cache(batch, max_len)

    def unembedding(self) -> jax.Array:
        """The wrapped model's unembedding matrix (steering leaves it unchanged).

        Returns:
            [D, V] matrix, as :meth:`Llama.unembedding`.
        """
        return self.model.unembedding()


@dataclasses.dataclass(frozen=True)
class SteeringConfig:
    """Where and how hard to steer: block ``layer``, strength ``alpha``; the direction comes
    from states split at the ``quantile`` of their action entropy."""

    layer: int = 0
    alpha: float = 1.0
    quantile: float = 0.5


@register(
    "east",
    paper="Controlling Large Language Model Agents with Entropic Activation Steering",
    kind="steering",
)
def east(
    model: Llama,
    states: ArrayLike,
    entropy: ArrayLike,
    config: SteeringConfig = SteeringConfig(),
) -> SteeredLlama:
    """EAST: steer ``model`` along the entropy direction of logged states (an activation hook).

    Formula:
        h_i = residual stream after block l at state i;  H_i = next-token (action) entropy
        v = mean(h_i | H_i > q-quantile of H) - mean(h_i | H_i <= q-quantile)
        steered block l output: x_t <- x_t + alpha v   at every position t

    Paper: "Controlling Large Language Model Agents with Entropic Activation Steering" (Rahn,
    D'Oro and Bellemare, 2024).

    Defaults: layer 0, alpha = 1, q = 0.5 are our choices (the paper sweeps layer and alpha
    per model). Our choice of direction: a difference of means between the high- and the
    low-entropy half of the states; the paper weights each state's activation by its action
    entropy, which points the same way when the high-entropy states differ from the others
    in the mean. The vector is not normalised: alpha is in units of that mean difference.
    alpha > 0 raises the action entropy, alpha < 0 lowers it, alpha = 0 is the unsteered
    model (``tests/models/test_steering.py`` measures it). ``states`` [N, D] come from
    :func:`residual_activations` at ``config.layer``. In an RL run, ``rollout.steering: {name:
    east, config: {...}}`` steers the sampling policy along the direction of each step's
    unsteered probe (``entropix.rl.steering``).

    Args:
        model: the decoder to steer (wrapped, not copied: its parameters are shared).
        states: [N, D] residual-stream activations after block ``config.layer``.
        entropy: [N] next-token (action) entropy at each state, in nats.
        config: the block, strength and entropy quantile; default ``SteeringConfig()``.

    Returns:
        A :class:`SteeredLlama` adding ``config.alpha * v`` after block ``config.layer``.
    """
    vector = entropy_direction(states, entropy, config.quantile)
    return SteeredLlama(model, vector, config.layer, config.alpha)
