"""Independent numpy (float64) reference of the Llama forward, written from the formulas.

RoPE here rotates each pair (x_i, x_{i+d/2}) by an explicit 2x2 rotation matrix; attention repeats
the kv heads to full multi-head attention and uses an explicit causal loop over queries.
"""

import numpy as np
from flax import nnx


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, positions, theta):
    """x [T, heads, d], positions [T]: rotate pair (i, i + d/2) by angle p * theta^(-2i/d)."""
    t, h, d = x.shape
    out = np.empty_like(x)
    for i in range(d // 2):
        freq = theta ** (-2.0 * i / d)
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
    x = w["embed.embedding"][np.asarray(tokens)]
    entropies = []
    for layer in range(cfg.num_layers):
        p = f"layers.{layer}."
        h = rms_norm(x, w[p + "attn_norm.weight"], cfg.rms_eps)
        q = (h @ w[p + "attn.q_proj.kernel"]).reshape(t, heads, hd)
        k = (h @ w[p + "attn.k_proj.kernel"]).reshape(t, kvh, hd)
        v = (h @ w[p + "attn.v_proj.kernel"]).reshape(t, kvh, hd)
        q, k = rope(q, positions, cfg.rope_theta), rope(k, positions, cfg.rope_theta)
        rep = heads // kvh
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        out = np.zeros((t, heads, hd))
        ent = np.zeros((heads, t))
        for i in range(t):
            keys = [j for j in range(i + 1) if valid[j]]
            for head in range(heads):
                if not keys or not valid[i]:
                    continue
                s = np.array([q[i, head] @ k[j, head] for j in keys]) / np.sqrt(hd)
                a = softmax(s)
                out[i, head] = a @ v[keys, head]
                ent[head, i] = -np.sum(a * np.log(a))
        entropies.append(ent)
        x = x + out.reshape(t, heads * hd) @ w[p + "attn.o_proj.kernel"]
        h = rms_norm(x, w[p + "mlp_norm.weight"], cfg.rms_eps)
        gate = h @ w[p + "mlp.gate_proj.kernel"]
        up = h @ w[p + "mlp.up_proj.kernel"]
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.kernel"]
    h = rms_norm(x, w["norm.weight"], cfg.rms_eps)
    unembed = w["embed.embedding"].T if cfg.tie_embeddings else w["lm_head.kernel"]
    return h @ unembed, np.stack(entropies)
