"""Entropy suite: fused chunked log-prob + entropy vs the naive full-logits path.

For each vocabulary size V, hidden states h [N, D], an unembedding W [D, V] and targets [N] are
drawn from a fixed seed; both paths are compiled and timed side by side, forward only
(log p(y) and H per token) and forward + backward (gradient of sum(log p) + sum(H) w.r.t. h and
W). Figures per row:

* ``time_fused/naive``  median seconds of the fused path over the naive one (< 1 = faster).
  Target on CPU: <= 1.3.
* ``temp_mem_naive/fused``  XLA temporary bytes of the naive program over the fused one (how
  many times less scratch memory the fused path needs). Target at V = 128k: >= 10.
"""

from functools import partial

import jax
import jax.numpy as jnp

from entropix.bench import report
from entropix.bench.memory import temp_bytes
from entropix.bench.timing import compile_jit, time_calls
from entropix.entropy.fused import naive_token_logprobs_and_entropy, token_logprobs_and_entropy

NORMAL = {"tokens": 1024, "dim": 256, "chunk": 1024, "vocabs": (32768, 49152, 128256)}
QUICK = {"tokens": 64, "dim": 32, "chunk": 256, "vocabs": (1024, 3000)}
TIME_TARGET = 1.3
MEMORY_TARGET = 10.0
MEMORY_TARGET_VOCAB = 128256


def _inputs(tokens, dim, vocab):
    k_h, k_w, k_y = jax.random.split(jax.random.PRNGKey(0), 3)
    hidden = jax.random.normal(k_h, (tokens, dim), jnp.float32)
    unembed = jax.random.normal(k_w, (dim, vocab), jnp.float32) * (3.0 / jnp.sqrt(dim))
    targets = jax.random.randint(k_y, (tokens,), 0, vocab)
    return hidden, unembed, targets


def _programs(chunk):
    """(name, fn) pairs: each path forward, and forward + backward."""

    def fused(h, w, y):
        return token_logprobs_and_entropy(h, w, y, chunk)

    def naive(h, w, y):
        return naive_token_logprobs_and_entropy(h, w, y)

    def with_grad(path):
        def objective(h, w, y):
            logp, entropy = path(h, w, y)
            return jnp.sum(logp) + jnp.sum(entropy)

        return jax.grad(objective, argnums=(0, 1))

    return {
        "forward": (fused, naive),
        "forward+backward": (with_grad(fused), with_grad(naive)),
    }


def run(quick: bool, repeats: int) -> list[dict]:
    """One row per (V, mode).

    Args:
        quick: measure the quick sizes (``QUICK``) instead of the normal ones (``NORMAL``).
        repeats: timed rounds per program (>= ``timing.MIN_REPEATS``).

    Returns:
        One ``report.row`` dict per (V, mode).
    """
    sizes = QUICK if quick else NORMAL
    rows = []
    for vocab in sizes["vocabs"]:
        args = _inputs(sizes["tokens"], sizes["dim"], vocab)
        for mode, (fused, naive) in _programs(min(sizes["chunk"], vocab)).items():
            c_fused, c_naive = compile_jit(fused, *args), compile_jit(naive, *args)
            calls = [partial(c_fused, *args), partial(c_naive, *args)]
            t_fused, t_naive = time_calls(calls, repeats)
            m_fused, m_naive = temp_bytes(c_fused), temp_bytes(c_naive)
            ratios = {"time_fused/naive": t_fused.median / t_naive.median}
            targets = {}
            if jax.devices()[0].platform == "cpu":  # the time target is stated for CPU
                met = ratios["time_fused/naive"] <= TIME_TARGET
                targets[f"time <= {TIME_TARGET}x naive (CPU)"] = met
            if m_fused and m_naive:
                ratios["temp_mem_naive/fused"] = m_naive / m_fused
                if vocab == MEMORY_TARGET_VOCAB:
                    met = ratios["temp_mem_naive/fused"] >= MEMORY_TARGET
                    targets[f"memory >= {MEMORY_TARGET:g}x lower"] = met
            values = {
                "tokens": sizes["tokens"],
                "dim": sizes["dim"],
                "vocab": vocab,
                "chunk": min(sizes["chunk"], vocab),
                "fused": t_fused.as_dict() | {"temp_bytes": m_fused},
                "naive": t_naive.as_dict() | {"temp_bytes": m_naive},
            }
            rows.append(report.row(f"V={vocab} {mode}", ratios, values, targets))
    return rows
