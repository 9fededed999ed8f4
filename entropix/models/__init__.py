"""Models (layer 5): Llama-family decoder (Llama 1-3, Mistral, Qwen2/2.5, Qwen3, SmolLM2) with KV
cache, sigmaReparam, TTA classifiers, loaders (HF safetensors, GGUF) and HF export.

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
from entropix.models.export import save_pretrained
from entropix.models.hf_config import FAMILIES, config_to_hf
from entropix.models.kv_cache import KVCache
from entropix.models.layers import RMSNorm, apply_rope, rope_cos_sin, rope_inv_freq
from entropix.models.llama import PRESETS, Llama, LlamaConfig, LlamaOutput, get_preset
from entropix.models.loaders import (
    ModelFileError,
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
from entropix.models.steering import (
    SteeredLlama,
    SteeringConfig,
    SteeringVector,
    east,
    entropy_direction,
    residual_activations,
)
from entropix.models.tokenizer import (
    Tokenizer,
    load_tokenizer,
    tokenizer_from_gguf,
    tokenizer_from_hf,
)

__all__ = [
    "FAMILIES",
    "NORMS",
    "PRESETS",
    "CNNClassifier",
    "ModelFileError",
    "KVCache",
    "Llama",
    "LlamaConfig",
    "LlamaOutput",
    "MLPClassifier",
    "PowerIterate",
    "RMSNorm",
    "SigmaReparamLinear",
    "SteeredLlama",
    "SteeringConfig",
    "SteeringVector",
    "Tokenizer",
    "apply_rope",
    "config_from_gguf",
    "config_from_hf",
    "config_to_hf",
    "east",
    "entropy_direction",
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
    "rope_inv_freq",
    "residual_activations",
    "save_pretrained",
    "spectral_state",
    "tokenizer_from_gguf",
    "tokenizer_from_hf",
    "unpermute_rope_rows",
]
