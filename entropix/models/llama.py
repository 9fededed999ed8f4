"""Llama-family decoder in Flax NNX: RMSNorm, RoPE, grouped-query attention, SwiGLU, KV cache.

One decoder parametrised by its config covers Llama 1-3, Mistral, Qwen2/2.5, Qwen3 and SmolLM2.
Architecture ("LLaMA: Open and Efficient Foundation Language Models", Touvron et al. 2023), per
block with pre-normalisation:
    q, k, v = W_q n1(x) + b_q, W_k n1(x) + b_k, W_v n1(x) + b_v     (biases: qkv_bias, Qwen2)
    q, k = qn(q), kn(k)                     (per-head RMSNorm over head_dim: qk_norm, Qwen3)
    h = x + W_o attn(rope(q), rope(k), v) (+ b_o: o_bias)            n1, n2 = RMSNorm
    y = h + W_down (silu(W_gate n2(h)) * W_up n2(h))                 (SwiGLU MLP; mlp_bias)
Grouped-query attention ("GQA", Ainslie et al. 2023): query head h reads kv head h // (H / KV).
Sliding-window attention (Mistral 7B, Jiang et al. 2023), ``sliding_window = W``: the query in
slot i reads key slots j with i - W < j <= i. The head size is ``explicit_head_dim`` when set
(Qwen3), else dim / num_heads. RoPE frequencies and their scaling: ``layers.rope_inv_freq``.
Attention scores, softmax and the per-head attention entropy accumulate in fp32.

Stable API (used by training, experiments and rollouts)::

    config = get_preset("tiny", vocab_size=64)          # or LlamaConfig(...), PRESETS[...]
    model = Llama(config, rngs=nnx.Rngs(0))
    out = model(tokens,                   # int [B, T]
                positions=None,           # int [B, T]; default: from attention_mask / cache
                cache=None,               # KVCache for incremental decoding (see init_cache)
                attention_mask=None,      # bool/float [B, T], 1 = real token, 0 = padding
                return_attention_entropy=False,
                return_logits=True,
                residual_hook=None)       # (layer, x [B, T, D]) -> x after each block
    out.logits             # fp32 [B, T, V] (None when return_logits=False)
    out.hidden             # [B, T, D] final-norm hidden states (input of the unembedding)
    out.unembed            # [D, V] unembedding matrix (tied: embedding^T)
    out.cache              # updated KVCache (None without a cache)
    out.attention_entropy  # fp32 [L, B, H, T] per layer, head, query (None unless asked)
    model.unembedding()    # [D, V], same matrix, without running the model
    model.init_cache(batch, max_len)

For training without [N, V] logits: ``out = model(tokens, return_logits=False)`` then
``entropix.entropy.token_logprobs_and_entropy(out.hidden.reshape(-1, D), out.unembed, targets)``.
With ``use_sigma_reparam`` every linear layer (and an untied output head) is a
``SigmaReparamLinear``; ``model.eval()`` stops its power-iteration updates (needed for
generation), ``model.train()`` resumes them.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from entropix.entropy import attention_entropy
from entropix.models.kv_cache import KVCache
from entropix.models.layers import (
    ROPE_TYPES,
    RMSNorm,
    apply_rope,
    linear,
    rope_cos_sin,
    rope_inv_freq,
)
from entropix.models.sigma_reparam import SigmaReparamLinear
from entropix.validation import check_choice, check_mask, check_positive, check_rank, check_shape


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Sizes and numerics of a Llama-family decoder (dtypes are names, e.g. "bfloat16").

    Family switches (all off = Llama/SmolLM2): ``qkv_bias`` (Qwen2/2.5; Llama's
    ``attention_bias`` sets it and ``o_bias``), ``mlp_bias``, ``qk_norm`` (Qwen3),
    ``explicit_head_dim`` (None = dim // num_heads), ``sliding_window`` (Mistral; None = full
    causal attention). RoPE: ``rope_theta`` and the scaling ``rope_type`` ("default", "linear",
    "llama3") with ``rope_factor``, ``rope_low_freq_factor``, ``rope_high_freq_factor``,
    ``rope_original_max_len``; or ``rope_freq_factors``, per-frequency divisors as llama.cpp
    stores them in GGUF (``rope_freqs.weight``). See ``layers.rope_inv_freq`` for the formulas.
    """

    vocab_size: int
    dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    ffn_dim: int
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"
    use_sigma_reparam: bool = False
    init_std: float = 0.02
    explicit_head_dim: int | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_len: int = 8192
    rope_freq_factors: tuple[float, ...] | None = None

    def __post_init__(self):
        for name in ("vocab_size", "dim", "num_layers", "num_heads", "num_kv_heads", "ffn_dim"):
            check_positive(getattr(self, name), f"LlamaConfig.{name}")
        if self.explicit_head_dim is not None:
            check_positive(self.explicit_head_dim, "LlamaConfig.explicit_head_dim")
        elif self.dim % self.num_heads:
            raise ValueError(
                f"LlamaConfig.dim={self.dim} must be divisible by num_heads={self.num_heads} "
                "(or set explicit_head_dim)"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"LlamaConfig.num_heads={self.num_heads} must be a multiple of "
                f"num_kv_heads={self.num_kv_heads} (grouped-query attention)"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim = {self.head_dim} must be even for RoPE")
        if self.sliding_window is not None:
            check_positive(self.sliding_window, "LlamaConfig.sliding_window")
        check_choice(self.rope_type, "LlamaConfig.rope_type", ROPE_TYPES)
        if self.rope_type != "default":
            check_positive(self.rope_factor, "LlamaConfig.rope_factor")
        if self.rope_type == "llama3" and not (
            0 < self.rope_low_freq_factor < self.rope_high_freq_factor
        ):
            raise ValueError(
                "LlamaConfig: llama3 rope scaling needs 0 < rope_low_freq_factor < "
                f"rope_high_freq_factor; got {self.rope_low_freq_factor}, "
                f"{self.rope_high_freq_factor}"
            )
        if self.rope_freq_factors is not None:
            factors = tuple(float(f) for f in self.rope_freq_factors)
            if len(factors) != self.head_dim // 2 or self.rope_type != "default":
                raise ValueError(
                    f"LlamaConfig.rope_freq_factors needs head_dim / 2 = {self.head_dim // 2} "
                    f"values and rope_type 'default'; got {len(factors)} and {self.rope_type!r}"
                )
            object.__setattr__(self, "rope_freq_factors", factors)  # hashable, plain floats
        for name in ("dtype", "param_dtype"):
            value = getattr(self, name)
            try:
                value = jnp.dtype(value).name
            except TypeError:
                pass
            check_choice(str(value), f"LlamaConfig.{name}", _DTYPES)
            object.__setattr__(self, name, value)  # normalise jnp.bfloat16 etc. to its name

    @property
    def head_dim(self) -> int:
        """Size of one attention head: ``explicit_head_dim``, else dim // num_heads."""
        return self.explicit_head_dim or self.dim // self.num_heads

    def rope_inv_freq(self) -> np.ndarray:
        """RoPE inverse frequencies [head_dim / 2] (fp32) of this config (see ``rope_inv_freq``).

        Returns:
            float32 [head_dim / 2] numpy array, scaled as the config's ``rope_*`` fields say.
        """
        return rope_inv_freq(
            self.head_dim,
            self.rope_theta,
            rope_type=self.rope_type,
            factor=self.rope_factor,
            low_freq_factor=self.rope_low_freq_factor,
            high_freq_factor=self.rope_high_freq_factor,
            original_max_len=self.rope_original_max_len,
            freq_factors=self.rope_freq_factors,
        )

    def num_params(self) -> int:
        """Trainable parameter count (sigmaReparam adds one gain per linear layer).

        Returns:
            The number of scalars in ``nnx.state(Llama(config), nnx.Param)`` (power-iteration
            state excluded).
        """
        d, hd, h, kv = self.dim, self.head_dim, self.num_heads, self.num_kv_heads
        attn = d * hd * (h * 2 + kv * 2)
        attn += (h + 2 * kv) * hd * self.qkv_bias + d * self.o_bias + 2 * hd * self.qk_norm
        mlp = 3 * d * self.ffn_dim + (2 * self.ffn_dim + d) * self.mlp_bias
        block = attn + mlp + 2 * d + (7 if self.use_sigma_reparam else 0)
        head = 0 if self.tie_embeddings else d * self.vocab_size + int(self.use_sigma_reparam)
        return self.vocab_size * d + self.num_layers * block + d + head


_DTYPES = ("float32", "bfloat16", "float16")

PRESETS: dict[str, LlamaConfig] = {
    # ~1.5M params: CPU tests and the default experiments.
    "tiny": LlamaConfig(
        vocab_size=512, dim=128, num_layers=6, num_heads=4, num_kv_heads=2, ffn_dim=512,
        max_seq_len=512,
    ),
    # ~28M params: benchmarks.
    "small": LlamaConfig(
        vocab_size=8192, dim=512, num_layers=8, num_heads=8, num_kv_heads=4, ffn_dim=1408,
        max_seq_len=2048,
    ),
    # SmolLM2-135M(-Instruct) shapes (weights come from a loader).
    "smollm2_135m": LlamaConfig(
        vocab_size=49152, dim=576, num_layers=30, num_heads=9, num_kv_heads=3, ffn_dim=1536,
        max_seq_len=8192, rope_theta=100000.0, rms_eps=1e-5, tie_embeddings=True,
    ),
}  # fmt: skip


def get_preset(name: str, **overrides: Any) -> LlamaConfig:
    """``PRESETS[name]`` with fields replaced by ``overrides`` (e.g. ``vocab_size=64``).

    Args:
        name: a key of :data:`PRESETS` ("tiny", "small", "smollm2_135m").
        **overrides: ``LlamaConfig`` fields to replace, by name.

    Returns:
        The preset's config with the overrides applied (checked again).
    """
    check_choice(name, "preset", tuple(PRESETS))
    return dataclasses.replace(PRESETS[name], **overrides)


@struct.dataclass
class LlamaOutput:
    """What a forward returns (see the module docstring); unrequested fields are None."""

    logits: jax.Array | None
    hidden: jax.Array
    unembed: jax.Array
    cache: KVCache | None = None
    attention_entropy: jax.Array | None = None


def _linear(cfg: LlamaConfig, d_in: int, d_out: int, rngs: nnx.Rngs, bias: bool = False):
    return linear(
        d_in,
        d_out,
        sigma_reparam=cfg.use_sigma_reparam,
        use_bias=bias,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        kernel_init=nnx.initializers.normal(cfg.init_std),
        rngs=rngs,
    )


class Attention(nnx.Module):
    """Grouped-query self-attention with RoPE; keys/values optionally go through the cache.

    Optional q/k/v (and o) biases, and per-head RMSNorm of q and k before RoPE (``qk_norm``).
    """

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        hd, bias = cfg.head_dim, cfg.qkv_bias
        self.q_proj = _linear(cfg, cfg.dim, cfg.num_heads * hd, rngs, bias)
        self.k_proj = _linear(cfg, cfg.dim, cfg.num_kv_heads * hd, rngs, bias)
        self.v_proj = _linear(cfg, cfg.dim, cfg.num_kv_heads * hd, rngs, bias)
        self.o_proj = _linear(cfg, cfg.num_heads * hd, cfg.dim, rngs, cfg.o_bias)
        norm = lambda: RMSNorm(hd, eps=cfg.rms_eps, param_dtype=cfg.param_dtype)
        self.q_norm = norm() if cfg.qk_norm else None
        self.k_norm = norm() if cfg.qk_norm else None

    def __call__(self, x, cos, sin, allowed, kv=None, want_entropy=False):
        """x [B,T,D]; allowed [B,T,S] bool; kv = (k_all, v_all, layer, start) or None.

        With ``kv`` the new keys/values are written into slots [start, start + T) of layer
        ``layer`` of the stacked cache arrays, attention runs over all slots of that layer, and
        the updated (k_all, v_all) are returned (else None).
        """
        cfg = self.cfg
        b, t, _ = x.shape
        kvh, hd = cfg.num_kv_heads, cfg.head_dim
        groups = cfg.num_heads // kvh
        q = self.q_proj(x).reshape(b, t, cfg.num_heads, hd)
        k = self.k_proj(x).reshape(b, t, kvh, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        v = self.v_proj(x).reshape(b, t, kvh, hd)
        if kv is not None:
            k_all, v_all, layer, start = kv
            index = (layer, 0, start, 0, 0)
            k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), index)
            v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), index)
            k, v, kv = k_all[layer], v_all[layer], (k_all, v_all)
        q = q.reshape(b, t, kvh, groups, hd)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
        scores = scores * (hd**-0.5)
        mask = allowed[:, None, None]
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v)
        out = self.o_proj(out.reshape(b, t, cfg.num_heads * hd))
        entropy = None
        if want_entropy:
            s = probs.shape[-1]
            entropy = attention_entropy(
                probs.reshape(b, cfg.num_heads, t, s), mask=allowed[:, None]
            )
        return out, entropy, kv


class MLP(nnx.Module):
    """SwiGLU feed-forward: W_down (silu(W_gate x) * W_up x)."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        bias = cfg.mlp_bias
        self.gate_proj = _linear(cfg, cfg.dim, cfg.ffn_dim, rngs, bias)
        self.up_proj = _linear(cfg, cfg.dim, cfg.ffn_dim, rngs, bias)
        self.down_proj = _linear(cfg, cfg.ffn_dim, cfg.dim, rngs, bias)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    """Pre-norm decoder block: attention then SwiGLU, each with a residual connection."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(cfg.dim, eps=cfg.rms_eps, param_dtype=cfg.param_dtype)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.dim, eps=cfg.rms_eps, param_dtype=cfg.param_dtype)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, cos, sin, allowed, kv=None, want_entropy=False):
        a, entropy, kv = self.attn(self.attn_norm(x), cos, sin, allowed, kv, want_entropy)
        x = x + a
        return x + self.mlp(self.mlp_norm(x)), entropy, kv


class Llama(nnx.Module):
    """Llama-family causal decoder; see the module docstring for the call API."""

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = nnx.Embed(
            config.vocab_size,
            config.dim,
            dtype=config.dtype,
            param_dtype=config.param_dtype,
            embedding_init=nnx.initializers.normal(config.init_std),
            rngs=rngs,
        )
        self.layers = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.dim, eps=config.rms_eps, param_dtype=config.param_dtype)
        self.lm_head = (
            None if config.tie_embeddings else _linear(config, config.dim, config.vocab_size, rngs)
        )

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty KV cache for ``batch`` rows of up to ``max_len`` tokens.

        Args:
            batch: rows decoded together (> 0).
            max_len: slots per row, prompt plus generated tokens (> 0).

        Returns:
            A :class:`KVCache` in the config's dtype, shaped for this model's layers and
            kv heads, with no slot written.
        """
        cfg = self.config
        return KVCache.init(
            cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim, cfg.dtype
        )

    def unembedding(self) -> jax.Array:
        """The unembedding matrix [D, V] (tied: embedding^T), without a power-iteration update.

        Returns:
            [dim, vocab_size] matrix in the parameter dtype (sigmaReparam: the effective kernel).
        """
        if self.lm_head is None:
            return self.embed.embedding[...].T
        if isinstance(self.lm_head, SigmaReparamLinear):
            return self.lm_head.effective_kernel(update=False)
        return self.lm_head.kernel[...]

    def _output_head(self):
        """Unembedding for a forward: a sigmaReparam head refines its estimate in training."""
        head = self.lm_head
        if isinstance(head, SigmaReparamLinear):
            return head.effective_kernel(update=not head.deterministic)
        return self.unembedding()

    def __call__(
        self,
        tokens,
        positions=None,
        cache: KVCache | None = None,
        attention_mask=None,
        return_attention_entropy: bool = False,
        return_logits: bool = True,
        residual_hook=None,
    ) -> LlamaOutput:
        cfg = self.config
        check_rank(tokens, "tokens", 2)
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise TypeError(f"tokens must be integer token ids [B, T]; got {tokens.dtype}")
        b, t = tokens.shape
        if attention_mask is None:
            new_valid = jnp.ones((b, t), bool)
        else:
            check_mask(attention_mask, "attention_mask", (b, t))
            new_valid = attention_mask.astype(bool)
        if positions is None:
            if cache is not None:
                positions = cache.next_positions(new_valid)
            else:
                positions = jnp.cumsum(new_valid.astype(jnp.int32), axis=-1) - 1
            positions = jnp.maximum(positions, 0)
        else:
            check_shape(positions, "positions", (b, t))

        if cache is None:
            key_valid, query_slot = new_valid, jnp.arange(t)
        else:
            check_shape(cache.valid, "cache.valid", (b, None))
            if t > cache.max_len:
                raise ValueError(f"{t} new tokens do not fit a KV cache of {cache.max_len} slots")
            key_valid = jax.lax.dynamic_update_slice(cache.valid, new_valid, (0, cache.length))
            query_slot = cache.length + jnp.arange(t)
            k_all, v_all = cache.k, cache.v

        key_slot = jnp.arange(key_valid.shape[1])
        causal = key_slot[None, :] <= query_slot[:, None]
        if cfg.sliding_window is not None:
            causal &= key_slot[None, :] > query_slot[:, None] - cfg.sliding_window
        allowed = causal[None] & key_valid[:, None, :]
        cos, sin = rope_cos_sin(positions, cfg.head_dim, inv_freq=cfg.rope_inv_freq())

        x = self.embed(tokens).astype(cfg.dtype)
        entropies = []
        for index, block in enumerate(self.layers):
            kv = None if cache is None else (k_all, v_all, index, cache.length)
            x, entropy, kv = block(x, cos, sin, allowed, kv, return_attention_entropy)
            if residual_hook is not None:  # activation steering (entropix.models.steering)
                x = residual_hook(index, x)
            if cache is not None:
                k_all, v_all = kv
            entropies.append(entropy)
        hidden = self.norm(x)
        unembed = self._output_head()
        logits = None
        if return_logits:
            logits = jnp.dot(
                hidden, unembed.astype(hidden.dtype), preferred_element_type=jnp.float32
            )
        new_cache = None
        if cache is not None:
            new_cache = KVCache(k=k_all, v=v_all, valid=key_valid, length=cache.length + t)
        attn_entropy = None
        if return_attention_entropy:
            attn_entropy = jnp.stack(entropies) * new_valid[None, :, None, :]
        return LlamaOutput(
            logits=logits,
            hidden=hidden,
            unembed=unembed,
            cache=new_cache,
            attention_entropy=attn_entropy,
        )
