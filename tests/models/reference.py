"""Independent numpy (float64) reference of the Llama forward, written from the formulas.

RoPE here rotates each pair (x_i, x_{i+d/2}) by an explicit 2x2 rotation matrix; attention repeats
the kv heads to full multi-head attention and uses an explicit causal loop over queries. The
family switches (biases, q/k RMSNorm, explicit head size, sliding window, linear/llama3 RoPE
scaling) are written out the same way, one frequency / one key at a time.
"""

import math

import numpy as np
from flax import nnx


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def frequency(cfg, i: int) -> float:
    """Frequency i of RoPE for a config: theta^(-2i/d), then its scaling rule."""
    d = cfg.head_dim
    freq = cfg.rope_theta ** (-2.0 * i / d)
    if cfg.rope_type == "linear":
        freq /= cfg.rope_factor
    elif cfg.rope_type == "llama3":
        wavelength = 2 * math.pi / freq
        context = cfg.rope_original_max_len
        low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
        if wavelength > context / low:
            freq /= cfg.rope_factor
        elif wavelength >= context / high:
            s = (context / wavelength - low) / (high - low)
            freq = (1 - s) * freq / cfg.rope_factor + s * freq
    if cfg.rope_freq_factors is not None:
        freq /= cfg.rope_freq_factors[i]
    return freq


def rope(x, positions, theta, freqs=None):
    """x [T, heads, d], positions [T]: rotate pair (i, i + d/2) by angle p * theta^(-2i/d)
    (or p * freqs[i])."""
    t, h, d = x.shape
    out = np.empty_like(x)
    for i in range(d // 2):
        freq = theta ** (-2.0 * i / d) if freqs is None else freqs[i]
        for q in range(t):
            a = positions[q] * freq
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            pair = np.stack([x[q, :, i], x[q, :, i + d // 2]])  # [2, heads]
            r = rot @ pair
            out[q, :, i], out[q, :, i + d // 2] = r[0], r[1]
    return out


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def weights_of(model):
    """Numpy float64 copies of a Llama's parameters keyed like the module tree."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {".".join(map(str, p)): np.asarray(v.get_value(), np.float64) for p, v in flat}


def forward(model, tokens, valid=None):
    """Logits [T, V] and attention entropy [L, H, T] of one row (valid: bool [T] or None)."""
    cfg = model.config
    w = weights_of(model)
    t = len(tokens)
    valid = np.ones(t, bool) if valid is None else np.asarray(valid, bool)
    positions = np.maximum(np.cumsum(valid) - 1, 0)
    hd, heads, kvh = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
    freqs = [frequency(cfg, i) for i in range(hd // 2)]
    x = w["embed.embedding"][np.asarray(tokens)]
    entropies = []

    def dense(h, name):  # x @ W (+ b when the layer has a bias)
        return h @ w[name + ".kernel"] + w.get(name + ".bias", 0.0)

    for layer in range(cfg.num_layers):
        p = f"layers.{layer}."
        h = rms_norm(x, w[p + "attn_norm.weight"], cfg.rms_eps)
        q = dense(h, p + "attn.q_proj").reshape(t, heads, hd)
        k = dense(h, p + "attn.k_proj").reshape(t, kvh, hd)
        v = dense(h, p + "attn.v_proj").reshape(t, kvh, hd)
        if cfg.qk_norm:
            q = rms_norm(q, w[p + "attn.q_norm.weight"], cfg.rms_eps)
            k = rms_norm(k, w[p + "attn.k_norm.weight"], cfg.rms_eps)
        q, k = rope(q, positions, None, freqs), rope(k, positions, None, freqs)
        rep = heads // kvh
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        out = np.zeros((t, heads, hd))
        ent = np.zeros((heads, t))
        for i in range(t):
            window = (
                range(i + 1) if cfg.sliding_window is None else range(i + 1)[-cfg.sliding_window :]
            )
            keys = [j for j in window if valid[j]]
            for head in range(heads):
                if not keys or not valid[i]:
                    continue
                s = np.array([q[i, head] @ k[j, head] for j in keys]) / np.sqrt(hd)
                a = softmax(s)
                out[i, head] = a @ v[keys, head]
                ent[head, i] = -np.sum(a * np.log(a))
        entropies.append(ent)
        x = x + dense(out.reshape(t, heads * hd), p + "attn.o_proj")
        h = rms_norm(x, w[p + "mlp_norm.weight"], cfg.rms_eps)
        gate = dense(h, p + "mlp.gate_proj")
        up = dense(h, p + "mlp.up_proj")
        x = x + dense(gate / (1 + np.exp(-gate)) * up, p + "mlp.down_proj")
    h = rms_norm(x, w["norm.weight"], cfg.rms_eps)
    unembed = w["embed.embedding"].T if cfg.tie_embeddings else w["lm_head.kernel"]
    return h @ unembed, np.stack(entropies)
