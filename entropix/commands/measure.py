"""Measure token entropy of a seeded random LM head by the fused and the naive path and compare.

Builds hidden states h [N, D] and an unembedding W [D, V] from a seed, computes per-token
log p(target) and entropy of softmax(h W / T) both ways, checks that they agree, and reports the
entropy statistics together with XLA's temporary-memory figure for each compiled path.
"""

import json
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


def add_arguments(parser):
    parser.add_argument("--tokens", type=int, default=1024, help="N, number of token positions")
    parser.add_argument("--dim", type=int, default=256, help="D, hidden size")
    parser.add_argument("--vocab", type=int, default=32768, help="V, vocabulary size")
    parser.add_argument("--chunk", type=int, default=1024, help="vocabulary columns per block")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--scale", type=float, default=3.0, help="logit scale (peakedness)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def _random_head(args):
    k_h, k_w, k_y = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    hidden = jax.random.normal(k_h, (args.tokens, args.dim), jnp.float32)
    unembed = jax.random.normal(k_w, (args.dim, args.vocab), jnp.float32)
    unembed = unembed * (args.scale / jnp.sqrt(args.dim))
    targets = jax.random.randint(k_y, (args.tokens,), 0, args.vocab)
    return hidden, unembed, targets


def run(args) -> int:
    hidden, unembed, targets = _random_head(args)
    fused = jax.jit(
        lambda h, w, y: token_logprobs_and_entropy(h, w, y, args.chunk, args.temperature)
    )
    naive = jax.jit(lambda h, w, y: naive_token_logprobs_and_entropy(h, w, y, args.temperature))
    report = {
        "tokens": args.tokens,
        "dim": args.dim,
        "vocab": args.vocab,
        "chunk": args.chunk,
        "temperature": args.temperature,
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
    report["entropy_bound_log_v"] = float(jnp.log(args.vocab))
    report["mean_nll"] = float(-jnp.mean(logp))
    sample_logits = (hidden[:64] @ unembed) / args.temperature
    report["varentropy_mean"] = float(jnp.mean(varentropy(sample_logits)))
    report["tsallis_q2_mean"] = float(jnp.mean(tsallis_entropy(sample_logits, 2.0)))
    report["renyi_inf_mean"] = float(jnp.mean(renyi_entropy(sample_logits, float("inf"))))
    report["memory_ratio"] = report["naive_temp_mib"] / max(report["fused_temp_mib"], 1e-9)
    agree = report["max_abs_diff_logp"] < 1e-3 and report["max_abs_diff_entropy"] < 1e-3
    report["paths_agree"] = agree
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0 if agree else 1
