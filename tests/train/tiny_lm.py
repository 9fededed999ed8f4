"""A tiny Llama language-model task shared by the training tests and their subprocess scripts.

Deterministic: the batch at position i depends only on i; the model on the seed.
"""

import numpy as np
import optax

from entropix.entropy import token_logprobs_and_entropy
from entropix.models import Llama, get_preset

VOCAB = 128
CONFIG = get_preset("tiny", vocab_size=VOCAB, num_layers=2)


def model_fn(rngs):
    return Llama(CONFIG, rngs=rngs)


def loss_fn(model, batch, key, controls):
    """Next-token cross-entropy by the fused path; reports the mean token entropy."""
    del key, controls
    tokens = batch["tokens"]
    out = model(tokens[:, :-1], return_logits=False)
    hidden = out.hidden.reshape(-1, out.hidden.shape[-1])
    logp, entropy = token_logprobs_and_entropy(hidden, out.unembed, tokens[:, 1:].reshape(-1))
    return -logp.mean(), {"entropy": entropy.mean(), "lm/loss": -logp.mean()}


def global_batch(position: int, rows: int = 16, length: int = 17) -> dict:
    rng = np.random.default_rng(1000 + position)
    return {"tokens": rng.integers(0, VOCAB, size=(rows, length)).astype(np.int32)}


def optimizer():
    """Adam with eps 1e-5. Near g = 0 Adam's update lr * g / (|g| + eps) has slope lr / eps:
    with the default eps 1e-8 the ~1e-9 reduction-order noise of a gradient summed in another
    order on another mesh becomes ~1e-4 in the parameters (measured: 6e-5 after 5 steps);
    with 1e-5 the same runs agree to ~1e-6."""
    return optax.adam(1e-3, eps=1e-5)
