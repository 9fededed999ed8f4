"""Per-token log p(target) and entropy straight from hidden states and the unembedding.

The naive path materialises logits z = h W / T of shape [N, V] (N tokens, V vocabulary), which
dominates memory for large vocabularies. The fused path walks the vocabulary in chunks of C
columns and keeps only three running statistics per token (an online log-sum-exp):

    m <- max(m, max_j z_j)                             running maximum
    s <- s e^(m_old - m) + sum_j e^(z_j - m)           running partition function / e^m
    t <- t e^(m_old - m) + sum_j e^(z_j - m) z_j       running sum of e^(z - m) z

so that at the end   LSE = m + log s,   H = LSE - t / s,   log p(y) = z_y - LSE.

The backward pass (a ``jax.custom_vjp``) recomputes each chunk of logits from (h, W) and uses

    d log p(y) / dz_j = 1[j = y] - p_j,        dH / dz_j = -p_j (log p_j + H),

so dL/dz for one chunk is formed, multiplied into dL/dh (+= dz W_c^T / T) and dL/dW_c
(= h^T dz / T), and discarded. Neither pass ever holds more than an [N, C] block of logits.
Matrix products accumulate in float32 (``preferred_element_type``), whatever the input dtype.
This is the "cut cross-entropy" idea ("Cut Your Losses in Large-Vocabulary Language Models",
Wijmans et al. 2024) extended to the entropy.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy.distribution import log_softmax
from entropix.validation import check_floating, check_positive, check_rank, check_shape

_PAD_LOGIT = -1e30  # logit of masked overlap columns: e^(pad - m) = 0 and 0 * pad is finite


def _validate(hidden, unembed, targets):
    check_floating(hidden, "hidden")
    check_floating(unembed, "unembed")
    check_rank(hidden, "hidden", 2)
    check_rank(unembed, "unembed", 2)
    check_shape(unembed, "unembed", (hidden.shape[1], None))
    check_shape(targets, "targets", (hidden.shape[0],))
    if not jnp.issubdtype(jnp.result_type(targets), jnp.integer):
        raise TypeError(f"targets must be integer token ids; got dtype {jnp.result_type(targets)}")


def naive_token_logprobs_and_entropy(
    hidden: ArrayLike, unembed: ArrayLike, targets: ArrayLike, temperature: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Reference path: materialise logits [N, V] = hidden @ unembed / T, then log p(y) and H.

    Args:
        hidden: floating [N, D] hidden states (N tokens).
        unembed: floating [D, V] unembedding.
        targets: integer [N] target token ids in [0, V).
        temperature: T, divides the logits; default 1.0.

    Returns:
        ``(logp, entropy)``: float32 [N] log p(target) and float32 [N] entropies in nats.
    """
    _validate(hidden, unembed, targets)
    logits = jnp.matmul(hidden, unembed, preferred_element_type=jnp.float32)
    logp_all = log_softmax(logits, temperature)
    logp = jnp.take_along_axis(logp_all, targets[:, None], axis=-1)[:, 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    return logp, entropy


def _num_chunks(vocab, chunk):
    return -(-vocab // chunk)


def _chunk_logits(hidden, unembed, index, chunk, temperature):
    """Logits of vocabulary block ``index``: columns [start, start + C) with start clamped to
    V - C, so the last block overlaps the previous one; overlap columns (already counted) are
    masked to a huge negative logit. Returns (z [N, C] fp32, start, valid [C])."""
    vocab = unembed.shape[1]
    start = jnp.minimum(index * chunk, vocab - chunk)
    block = jax.lax.dynamic_slice_in_dim(unembed, start, chunk, axis=1)
    valid = start + jnp.arange(chunk) >= index * chunk
    z = jnp.matmul(hidden, block, preferred_element_type=jnp.float32) / temperature
    return jnp.where(valid[None, :], z, _PAD_LOGIT), block, start, valid


def _forward_stats(hidden, unembed, targets, chunk, temperature):
    n = hidden.shape[0]

    def step(carry, index):
        m, s, t, z_target = carry
        z, _, start, _ = _chunk_logits(hidden, unembed, index, chunk, temperature)
        m_new = jnp.maximum(m, jnp.max(z, axis=1))
        scale = jnp.exp(m - m_new)
        e = jnp.exp(z - m_new[:, None])
        s = s * scale + jnp.sum(e, axis=1)
        t = t * scale + jnp.sum(e * z, axis=1)
        local = targets - start
        in_chunk = (local >= 0) & (local < chunk)
        picked = jnp.take_along_axis(z, jnp.clip(local, 0, chunk - 1)[:, None], axis=1)[:, 0]
        z_target = jnp.where(in_chunk & (targets >= index * chunk), picked, z_target)
        return (m_new, s, t, z_target), None

    init = (
        jnp.full((n,), -jnp.inf, jnp.float32),
        jnp.zeros((n,), jnp.float32),
        jnp.zeros((n,), jnp.float32),
        jnp.zeros((n,), jnp.float32),
    )
    (m, s, t, z_target), _ = jax.lax.scan(
        step, init, jnp.arange(_num_chunks(unembed.shape[1], chunk))
    )
    lse = m + jnp.log(s)
    return z_target - lse, lse - t / s, lse


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fused(hidden, unembed, targets, chunk, temperature):
    logp, entropy, _ = _forward_stats(hidden, unembed, targets, chunk, temperature)
    return logp, entropy


def _fused_fwd(hidden, unembed, targets, chunk, temperature):
    logp, entropy, lse = _forward_stats(hidden, unembed, targets, chunk, temperature)
    return (logp, entropy), (hidden, unembed, targets, lse, entropy)


def _fused_bwd(chunk, temperature, residuals, cotangents):
    hidden, unembed, targets, lse, entropy = residuals
    g_logp, g_entropy = (jnp.asarray(g, jnp.float32) for g in cotangents)
    hidden32 = hidden.astype(jnp.float32)

    def step(carry, index):
        d_hidden, d_unembed = carry
        z, block, start, valid = _chunk_logits(hidden, unembed, index, chunk, temperature)
        logp = z - lse[:, None]
        p = jnp.where(valid[None, :], jnp.exp(logp), 0.0)
        onehot = (start + jnp.arange(chunk))[None, :] == targets[:, None]
        d_z = g_logp[:, None] * (onehot - p) - g_entropy[:, None] * p * (logp + entropy[:, None])
        d_z = jnp.where(valid[None, :], d_z, 0.0) / temperature
        d_hidden = d_hidden + d_z @ block.astype(jnp.float32).T
        d_block = jax.lax.dynamic_slice_in_dim(d_unembed, start, chunk, axis=1) + hidden32.T @ d_z
        d_unembed = jax.lax.dynamic_update_slice_in_dim(d_unembed, d_block, start, axis=1)
        return (d_hidden, d_unembed), None

    init = (jnp.zeros(hidden.shape, jnp.float32), jnp.zeros(unembed.shape, jnp.float32))
    (d_hidden, d_unembed), _ = jax.lax.scan(
        step, init, jnp.arange(_num_chunks(unembed.shape[1], chunk))
    )
    return d_hidden.astype(hidden.dtype), d_unembed.astype(unembed.dtype), None


_fused.defvjp(_fused_fwd, _fused_bwd)


def token_logprobs_and_entropy(
    hidden: ArrayLike,
    unembed: ArrayLike,
    targets: ArrayLike,
    chunk: int = 1024,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Per-token log p(target) [N] and entropy H [N] of softmax(hidden @ unembed / T), chunked.

    Differentiable w.r.t. hidden and unembed with a memory-light custom VJP (module docstring).

    Args:
        hidden: floating [N, D] hidden states (N tokens; flatten [batch, time] first).
        unembed: floating [D, V] unembedding.
        targets: integer [N] target token ids in [0, V).
        chunk: vocabulary columns per block, > 0 (memory ~ N * chunk floats; capped at V);
            default 1024.
        temperature: T > 0, divides the logits; static (a Python number); default 1.0.

    Returns:
        ``(logp, entropy)``: float32 [N] log p(target) and float32 [N] entropies in nats,
        equal to :func:`naive_token_logprobs_and_entropy`'s.
    """
    _validate(hidden, unembed, targets)
    check_positive(chunk, "chunk")
    check_positive(temperature, "temperature")
    chunk = int(min(chunk, unembed.shape[1]))
    return _fused(hidden, unembed, targets, chunk, float(temperature))
