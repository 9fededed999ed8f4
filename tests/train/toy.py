"""A small classifier task for fast in-process training tests (1 device)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entropix.entropy import shannon_entropy

FEATURES, HIDDEN, CLASSES = 6, 16, 4


class MLP(nnx.Module):
    """Linear -> [BatchNorm] -> tanh -> Linear; with BatchNorm it has non-param state."""

    def __init__(self, rngs: nnx.Rngs, batch_norm: bool = True):
        self.hidden = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
        norm = nnx.BatchNorm(HIDDEN, use_running_average=False, rngs=rngs) if batch_norm else None
        self.norm = norm
        self.out = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x):
        h = self.hidden(x)
        return self.out(jnp.tanh(h if self.norm is None else self.norm(h)))


def model_fn(rngs):
    return MLP(rngs)


def plain_model_fn(rngs):
    """Without BatchNorm: the loss of a batch is the mean of its rows' losses."""
    return MLP(rngs, batch_norm=False)


def cross_entropy(logits, labels):
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def loss_fn(model, batch, key, controls):
    """Cross-entropy minus an optional entropy bonus read from ``controls``."""
    del key
    logits = model(batch["x"])
    ce = cross_entropy(logits, batch["y"])
    entropy = jnp.mean(shannon_entropy(logits))
    loss = ce - controls.get("entropy_coef", 0.0) * entropy
    return loss, {"entropy": entropy, "ce/loss": ce}


def batch(position: int, rows: int = 8) -> dict:
    rng = np.random.default_rng(position)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0).astype(np.int32)}
