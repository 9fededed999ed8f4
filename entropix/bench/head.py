"""The fused and the naive entropy path on a seeded random LM head, compared (``entropix
measure``): agreement, entropy statistics and XLA's temporary memory of each compiled path."""

import time

import jax
import jax.numpy as jnp

from entropix.entropy import (
    naive_token_logprobs_and_entropy,
    renyi_entropy,
    token_logprobs_and_entropy,
    tsallis_entropy,
    varentropy,
)

AGREEMENT = 1e-3  # max |fused - naive| of log p and of H for the paths to agree


def random_head(
    tokens: int, dim: int, vocab: int, scale: float, seed: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A seeded LM head: hidden states, unembedding and targets.

    Args:
        tokens: N, the number of token positions.
        dim: D, the hidden size.
        vocab: V, the vocabulary size.
        scale: the logit scale; W has entries N(0, 1) * scale / sqrt(D) (larger: peakier).
        seed: PRNG seed.

    Returns:
        ``(hidden [N, D] float32, unembed [D, V] float32, targets [N] int32)``.
    """
    k_h, k_w, k_y = jax.random.split(jax.random.PRNGKey(seed), 3)
    hidden = jax.random.normal(k_h, (tokens, dim), jnp.float32)
    unembed = jax.random.normal(k_w, (dim, vocab), jnp.float32) * (scale / jnp.sqrt(dim))
    targets = jax.random.randint(k_y, (tokens,), 0, vocab)
    return hidden, unembed, targets


def measure_head(
    tokens: int = 1024,
    dim: int = 256,
    vocab: int = 32768,
    chunk: int = 1024,
    temperature: float = 1.0,
    scale: float = 3.0,
    seed: int = 0,
) -> dict:
    """Per-token log p(target) and entropy of softmax(h W / T) by the fused and the naive path.

    Args:
        tokens, dim, vocab, scale, seed: the head (:func:`random_head`).
        chunk: vocabulary columns per block of the fused path.
        temperature: T.

    Returns:
        A flat dict: the sizes, the device, each path's seconds and temporary MiB, the largest
        differences between the paths, entropy statistics (mean, min, max, the bound log V),
        mean NLL, varentropy / Tsallis q=2 / Renyi inf means on 64 rows, the memory ratio
        naive / fused and ``paths_agree`` (both differences below :data:`AGREEMENT`).
    """
    hidden, unembed, targets = random_head(tokens, dim, vocab, scale, seed)
    fused = jax.jit(lambda h, w, y: token_logprobs_and_entropy(h, w, y, chunk, temperature))
    naive = jax.jit(lambda h, w, y: naive_token_logprobs_and_entropy(h, w, y, temperature))
    report = {
        "tokens": tokens,
        "dim": dim,
        "vocab": vocab,
        "chunk": chunk,
        "temperature": temperature,
        "device": jax.devices()[0].device_kind,
    }
    outputs = {}
    for name, fn in (("fused", fused), ("naive", naive)):
        compiled = fn.lower(hidden, unembed, targets).compile()
        start = time.perf_counter()
        outputs[name] = jax.block_until_ready(compiled(hidden, unembed, targets))
        report[f"{name}_seconds"] = time.perf_counter() - start
        report[f"{name}_temp_mib"] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    (logp, entropy), (ref_logp, ref_entropy) = outputs["fused"], outputs["naive"]
    report["max_abs_diff_logp"] = float(jnp.max(jnp.abs(logp - ref_logp)))
    report["max_abs_diff_entropy"] = float(jnp.max(jnp.abs(entropy - ref_entropy)))
    report["entropy_mean"] = float(jnp.mean(entropy))
    report["entropy_min"] = float(jnp.min(entropy))
    report["entropy_max"] = float(jnp.max(entropy))
    report["entropy_bound_log_v"] = float(jnp.log(vocab))
    report["mean_nll"] = float(-jnp.mean(logp))
    sample_logits = (hidden[:64] @ unembed) / temperature
    report["varentropy_mean"] = float(jnp.mean(varentropy(sample_logits)))
    report["tsallis_q2_mean"] = float(jnp.mean(tsallis_entropy(sample_logits, 2.0)))
    report["renyi_inf_mean"] = float(jnp.mean(renyi_entropy(sample_logits, float("inf"))))
    report["memory_ratio"] = report["naive_temp_mib"] / max(report["fused_temp_mib"], 1e-9)
    report["paths_agree"] = (
        report["max_abs_diff_logp"] < AGREEMENT and report["max_abs_diff_entropy"] < AGREEMENT
    )
    return report
