"""Models (layer 5): Llama-family decoder with KV cache, sigmaReparam, TTA classifiers, loaders.

See ``docs/models.md`` for the architecture, presets, loaders and their checks.
"""

from entropix.models.classifiers import (
    NORMS,
    CNNClassifier,
    MLPClassifier,
    norm_affine_filter,
    norm_affine_mask,
    norm_affine_paths,
)
from entropix.models.kv_cache import KVCache
from entropix.models.layers import RMSNorm, apply_rope, rope_cos_sin
from entropix.models.llama import PRESETS, Llama, LlamaConfig, LlamaOutput, get_preset
from entropix.models.loaders import (
    CheckpointError,
    config_from_gguf,
    config_from_hf,
    load_gguf,
    load_hf,
    load_pretrained,
    open_gguf,
    smollm2_gguf_path,
    unpermute_rope_rows,
)
from entropix.models.sigma_reparam import (
    PowerIterate,
    SigmaReparamLinear,
    power_iteration_step,
    spectral_state,
)
from entropix.models.tokenizer import (
    Tokenizer,
    load_tokenizer,
    tokenizer_from_gguf,
    tokenizer_from_hf,
)

__all__ = [
    "NORMS",
    "PRESETS",
    "CNNClassifier",
    "CheckpointError",
    "KVCache",
    "Llama",
    "LlamaConfig",
    "LlamaOutput",
    "MLPClassifier",
    "PowerIterate",
    "RMSNorm",
    "SigmaReparamLinear",
    "Tokenizer",
    "apply_rope",
    "config_from_gguf",
    "config_from_hf",
    "get_preset",
    "load_gguf",
    "load_hf",
    "load_pretrained",
    "load_tokenizer",
    "norm_affine_filter",
    "norm_affine_mask",
    "norm_affine_paths",
    "open_gguf",
    "smollm2_gguf_path",
    "power_iteration_step",
    "rope_cos_sin",
    "spectral_state",
    "tokenizer_from_gguf",
    "tokenizer_from_hf",
    "unpermute_rope_rows",
]
