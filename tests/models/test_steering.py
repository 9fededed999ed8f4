"""Entropic activation steering: the hook's identity at alpha = 0 and its measured effect on the
next-token (action) entropy of a tiny decoder, in the forward and in generation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from entropix.entropy import shannon_entropy
from entropix.models import (
    Llama,
    SteeredLlama,
    SteeringConfig,
    east,
    entropy_direction,
    get_preset,
    residual_activations,
)
from entropix.rollout import generate, make_sampler

LAYER = 1  # the last block: its steering is measured on held-out prompts below


@pytest.fixture(scope="module")
def setup():
    config = get_preset(
        "tiny",
        vocab_size=32,
        dim=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        ffn_dim=64,
        init_std=0.2,  # varied next-token entropies (the preset's 0.02 is near uniform)
    )
    model = Llama(config, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (64, 6), 0, 32)
    states = residual_activations(model, tokens, layer=LAYER)[:, -1]
    entropy = shannon_entropy(model(tokens).logits[:, -1])
    return model, tokens, states, entropy


def action_entropy(model, tokens):
    return float(jnp.mean(shannon_entropy(model(tokens).logits[:, -1])))


def test_alpha_zero_is_the_unsteered_model(setup):
    model, tokens, states, entropy = setup
    steered = east(model, states, entropy, SteeringConfig(layer=LAYER, alpha=0.0))
    np.testing.assert_allclose(steered(tokens).logits, model(tokens).logits, rtol=0, atol=1e-6)


def test_entropy_rises_for_positive_alpha_and_falls_for_negative(setup):
    model, tokens, states, entropy = setup
    fresh = jax.random.randint(jax.random.PRNGKey(7), (64, 6), 0, 32)  # held-out states
    base = action_entropy(model, fresh)
    measured = {
        alpha: action_entropy(east(model, states, entropy, SteeringConfig(LAYER, alpha)), fresh)
        for alpha in (-1.0, -0.5, 0.5, 1.0)
    }
    assert measured[-1.0] < measured[-0.5] < base < measured[0.5] < measured[1.0], (base, measured)


def test_steered_generation_samples_with_the_shifted_entropy(setup):
    model, tokens, states, entropy = setup
    v = entropy_direction(states, entropy)
    prompts = tokens[:16, :3]
    kwargs = dict(key=jax.random.PRNGKey(3), max_new_tokens=4, sampler=make_sampler("temperature"))
    plain = generate(model, prompts, **kwargs)
    zero = generate(SteeredLlama(model, v, LAYER, 0.0), prompts, **kwargs)
    np.testing.assert_array_equal(zero.tokens, plain.tokens)
    up = generate(SteeredLlama(model, v, LAYER, 1.0), prompts, **kwargs)
    down = generate(SteeredLlama(model, v, LAYER, -1.0), prompts, **kwargs)
    mean = lambda r: float(jnp.mean(r.entropy))  # noqa: E731  (the sampled steps' entropy)
    assert mean(down) < mean(plain) < mean(up)


def test_bad_layer_and_degenerate_states_are_refused(setup):
    model, _, states, _ = setup
    with pytest.raises(ValueError, match="layer must be an integer in"):
        SteeredLlama(model, jnp.zeros(32), 2)
    with pytest.raises(ValueError, match="no state on one side"):
        entropy_direction(states, jnp.ones(states.shape[0]))
    with pytest.raises(ValueError, match="vector"):
        SteeredLlama(model, jnp.zeros(31), 0)
