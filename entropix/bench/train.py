"""Train suite: tokens/s and model FLOP utilisation (MFU) of the decoder train step, and the cost
of computing the full entropy diagnostics inside that step.

The step is the real train engine: ``entropix.train.make_train_step(loss_fn)`` on a
``TrainState.create(Llama(preset), optax.adamw(1e-4))`` (one jitted program: forward, backward,
AdamW update, non-finite guard; the state is donated, so the timed call feeds the returned state
back in). The loss is token-mean PPO clip (``entropix.losses.ppo_clip`` through ``compose``) on a
synthetic RL batch of B x (T + 1) random tokens: the policy's log-probs of the T next tokens come
from the fused path (``entropix.entropy.token_logprobs_and_entropy`` on the final hidden states
and the unembedding, no [B*T, V] logits), with per-response advantages, a ragged response mask
(lengths in [T/2, T]) and fixed behaviour log-probs. Models: the ``tiny`` and ``small`` presets
with random weights (speed depends on the shapes only).

Two variants of the same step are timed side by side (interleaved), each with its own state:

* ``none``: the loss and the PPO term's own metrics only.
* ``diagnostics``: the same loss plus, from the same forward pass, as extra scalar metrics: the
  per-token policy entropy H_t (the fused path returns it with log p) reduced under the mask
  (mean, std, min, max), the first-order predicted entropy change of the batch
  ``entropix.dynamics.batch_predicted_entropy_change(logp, A, mask)`` = -mean_t Cov_t with
  Cov_t = (log pi(y_t) - mean log pi)(A_t - mean A) (Cui et al. 2025, natural-PG form, eta = 1),
  and the attention entropy of every layer and head (the model's
  ``return_attention_entropy=True`` tap, ``entropix.entropy.attention_entropy`` of the softmax
  probabilities): its mean over heads and valid queries per layer and overall. The fused path
  computes H_t in both variants (it is a by-product of its online log-sum-exp), so the overhead
  measures the reductions, the covariance and the attention-entropy tap.

Figures per preset:

* ``mfu``  model FLOP utilisation of the ``none`` step: (model FLOPs per step / median step
  seconds) / peak FLOP/s. Model FLOPs per step = tokens * (6 * N_matmul + 12 * L * D * T), the
  PaLM convention (Chowdhery et al. 2022, appendix B): 6 FLOPs per weight per token for the
  forward (2) and backward (4) matmuls, N_matmul = L * (D * hd * (2 H + 2 KV) + 3 * D * F)
  + D * V, i.e. the attention projections, the SwiGLU MLP and the unembedding matmul [D, V]
  (counted: it is a real matmul, tied or not); the embedding lookup (a gather), norms and
  other elementwise work are not counted. 12 * L * D * T is the attention score and value
  matmuls (q.k and p.v, 2 * 2 * T * D per token and layer forward, x3 with the backward) over
  all T keys: the step computes the full masked T x T scores, so the causal half is not taken
  off. Recomputation is not counted (model FLOPs, not hardware FLOPs): the fused path's
  backward recomputes each logit chunk, another 2 * D * V per token.
* ``peak``: the dense-matmul peak of this machine measured in the same run: a jitted
  N x N x N fp32 matmul (2 * N^3 FLOPs; N = 2048 on CPU, 8192 on a GPU/TPU, where 2048 is too
  small to fill the device; default matmul precision, i.e. TF32/bf16 passes there) timed
  interleaved with the train steps, so the same load hits both, and in as many calls of its
  own just before them; peak FLOP/s = 2 * N^3 / its *fastest* timed call (the peak is the
  best rate the machine reached; the median rate of the interleaved calls is in ``values``
  too). The calls of its own are there because on CPU the first matmul after a long step can
  run 3-4x slower (measured: 0.39 s against 0.09 s after a 15 s step of the small preset), and
  interleaved, every call is such a first call. Against a median-based peak the MFU would be
  higher: on a shared machine short matmul calls suffer more from other processes' bursts than
  the long steps. An MFU above 1 can only come from a peak measured low, so the MFU target is
  not met then.
* ``overhead_diagnostics/none``  step seconds with the full diagnostics over without, as the
  median over timing rounds of the two steps' ratio within a round (``paired_ratio``: both
  see the same load from other processes); the ratio of medians and of minima are in
  ``values``. Target: <= 1.10.
* ``values``: tokens/s of both variants (B * T / median seconds), achieved and peak GFLOP/s,
  model GFLOP per step, FLOPs per token, parameter counts, the Timing of each program.

Target on the ``small`` row (the suite's normal sizes have B * T = 8192 tokens):
MFU >= 0.4 on CPU.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from entropix.bench import report
from entropix.bench.timing import paired_ratio, time_calls
from entropix.dynamics import batch_predicted_entropy_change
from entropix.entropy import masked_mean, masked_var, token_logprobs_and_entropy
from entropix.losses import compose, make_policy_batch, ppo_clip
from entropix.models import Llama, LlamaConfig, get_preset
from entropix.train import TrainState, make_train_step

NORMAL = {"tiny": {"batch": 32, "time": 256}, "small": {"batch": 32, "time": 256}}
# --quick: 2 of tiny's 6 layers (compiling both steps of the full tiny preset takes ~8 s)
QUICK = {"tiny": {"batch": 2, "time": 16, "num_layers": 2}, "small": None}
QUICK_SKIP = "skipped with --quick (28M parameters, 8192-token batches)"
# peak matmul [N, N] @ [N, N] fp32: 2048 saturates a CPU; a GPU/TPU needs a larger product
PEAK_N = {"cpu": 2048, "accelerator": 8192}
QUICK_PEAK_N = 512
MFU_TARGET = 0.4
MFU_MIN_TOKENS = 8192
OVERHEAD_TARGET = 1.10
LEARNING_RATE = 1e-4


def matmul_params(config: LlamaConfig) -> int:
    """Weights that enter a matmul per token: attention projections, SwiGLU MLP, unembedding.

    Args:
        config: the decoder's config.

    Returns:
        The weight count N_matmul.
    """
    d, hd = config.dim, config.head_dim
    attn = d * hd * (2 * config.num_heads + 2 * config.num_kv_heads)
    mlp = 3 * d * config.ffn_dim
    return config.num_layers * (attn + mlp) + d * config.vocab_size


def flops_per_token(config: LlamaConfig, seq_len: int) -> int:
    """Train FLOPs per token: 6 * N_matmul + 12 * L * D * T (see the module docstring).

    Args:
        config: the decoder's config.
        seq_len: the sequence length T.

    Returns:
        FLOPs of a forward and backward per token.
    """
    return 6 * matmul_params(config) + 12 * config.num_layers * config.dim * seq_len


def _masked_min_max(x, mask):
    valid = mask > 0
    return jnp.min(jnp.where(valid, x, jnp.inf)), jnp.max(jnp.where(valid, x, -jnp.inf))


def make_loss_fn(diagnostics: bool) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """``loss_fn(model, batch, key, controls)`` for ``make_train_step``: token-mean PPO clip,
    with the full entropy diagnostics as extra metrics when ``diagnostics``.

    Args:
        diagnostics: add the entropy statistics, predicted dH and attention entropy metrics.

    Returns:
        ``loss_fn(model, batch, key, controls) -> (loss, metrics)`` over a
        :func:`make_batch` batch.
    """
    objective = compose(ppo_clip(), aggregate="token-mean")

    def loss_fn(model, batch, key, controls):
        del key, controls
        tokens = batch["tokens"]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        b, t = inputs.shape
        out = model(inputs, return_logits=False, return_attention_entropy=diagnostics)
        hidden = out.hidden.reshape(b * t, -1)
        logp, entropy = token_logprobs_and_entropy(hidden, out.unembed, targets.reshape(-1))
        logp, entropy = logp.reshape(b, t), entropy.reshape(b, t)
        mask = batch["mask"]
        policy = make_policy_batch(
            logp, batch["advantages"], mask, old_logp=batch["old_logp"], entropy=entropy
        )
        loss, metrics = objective(policy)
        if not diagnostics:
            return loss, metrics
        h = jax.lax.stop_gradient(entropy)
        h_min, h_max = _masked_min_max(h, mask)
        metrics["entropy/mean"] = masked_mean(h, mask)
        metrics["entropy/std"] = jnp.sqrt(masked_var(h, mask))
        metrics["entropy/min"] = h_min
        metrics["entropy/max"] = h_max
        metrics["dynamics/predicted_dH"] = batch_predicted_entropy_change(
            jax.lax.stop_gradient(logp), policy.advantages, mask
        )
        attn = jax.lax.stop_gradient(out.attention_entropy)  # [L, B, H, T], 0 at padding
        valid = jnp.broadcast_to(mask[None, :, None, :], attn.shape)
        per_layer = masked_mean(attn, valid, axis=(1, 2, 3))
        for layer in range(attn.shape[0]):
            metrics[f"attention_entropy/layer{layer}"] = per_layer[layer]
        metrics["attention_entropy/mean"] = masked_mean(attn, valid)
        return loss, metrics

    return loss_fn


def make_batch(vocab: int, batch: int, time: int, seed: int = 0) -> dict[str, jax.Array]:
    """A synthetic RL batch: tokens [B, T + 1], advantages [B], mask [B, T], old_logp [B, T].

    Args:
        vocab: token ids are drawn from [0, vocab).
        batch: B, the number of responses.
        time: T, the response length (lengths drawn in [T/2, T]).
        seed: numpy seed; default 0.

    Returns:
        ``{"tokens": int32 [B, T + 1], "advantages": float32 [B], "mask": float32 [B, T],
        "old_logp": float32 [B, T]}``.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(time // 2, time + 1, size=batch)
    return {
        "tokens": jnp.asarray(rng.integers(0, vocab, size=(batch, time + 1)), jnp.int32),
        "advantages": jnp.asarray(rng.standard_normal(batch), jnp.float32),
        "mask": jnp.asarray(np.arange(time)[None, :] < lengths[:, None], jnp.float32),
        "old_logp": jnp.asarray(
            -np.log(vocab) + 0.1 * rng.standard_normal((batch, time)), jnp.float32
        ),
    }


class StepLoop:
    """Zero-argument callable running one train step on a fixed batch and keeping the new state
    (the step donates the old one); returns (state, metrics) for ``block_until_ready``."""

    def __init__(self, config, batch: dict, diagnostics: bool):
        model = Llama(config, rngs=nnx.Rngs(0))
        self.state = TrainState.create(model, optax.adamw(LEARNING_RATE), rng=jax.random.PRNGKey(0))
        self.step = make_train_step(make_loss_fn(diagnostics))
        self.batch = batch
        self.metrics = None

    def __call__(self):
        self.state, self.metrics = self.step(self.state, self.batch)
        return self.state, self.metrics


def matmul_peak_call(n: int) -> tuple[Callable[[], Any], int]:
    """A zero-argument call of a compiled [n, n] @ [n, n] fp32 matmul, and its FLOPs.

    Args:
        n: the matrices' size.

    Returns:
        ``(call, flops)``: the call, returning the product, and 2 n^3.
    """
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    compiled = jax.jit(jnp.matmul).lower(a, b).compile()
    return (lambda: compiled(a, b)), 2 * n**3


def run(quick: bool, repeats: int) -> list[dict]:
    """One row per decoder preset.

    Args:
        quick: measure the quick sizes (``QUICK``) instead of the normal ones (``NORMAL``).
        repeats: timed rounds per program (>= ``timing.MIN_REPEATS``).

    Returns:
        One ``report.row`` (or ``report.unavailable``) dict per preset.
    """
    rows = []
    on_cpu = jax.devices()[0].platform == "cpu"
    peak_n = QUICK_PEAK_N if quick else PEAK_N["cpu" if on_cpu else "accelerator"]
    peak_call, peak_flops = matmul_peak_call(peak_n)
    for preset, sizes in (QUICK if quick else NORMAL).items():
        if sizes is None:
            rows.append(report.unavailable(preset, QUICK_SKIP))
            continue
        b, t = sizes["batch"], sizes["time"]
        overrides = {"num_layers": sizes["num_layers"]} if "num_layers" in sizes else {}
        config = get_preset(preset, **overrides)
        if t > config.max_seq_len:
            raise ValueError(f"{preset}: T={t} exceeds max_seq_len={config.max_seq_len}")
        batch = make_batch(config.vocab_size, b, t)
        none, diag = StepLoop(config, batch, False), StepLoop(config, batch, True)
        (t_peak_alone,) = time_calls([peak_call], repeats)
        t_peak, t_none, t_diag = time_calls([peak_call, none, diag], repeats)
        for loop, name in ((none, "none"), (diag, "diagnostics")):
            if not np.isfinite(float(loop.metrics["loss"])):
                rows.append(report.unavailable(preset, f"{name} step gave a non-finite loss"))
                break
        else:
            tokens = b * t
            step_flops = tokens * flops_per_token(config, t)
            peak = peak_flops / min(t_peak.min, t_peak_alone.min)
            achieved = step_flops / t_none.median
            mfu = achieved / peak
            overhead = paired_ratio(t_diag, t_none)
            values = {
                "preset": preset,
                "num_layers": config.num_layers,
                "weights": "random (shapes only)",
                **sizes,
                "tokens": tokens,
                "params": config.num_params(),
                "matmul_params": matmul_params(config),
                "flops_per_token": flops_per_token(config, t),
                "model_gflop_per_step": step_flops / 1e9,
                "achieved_gflop_per_s": achieved / 1e9,
                "peak_gflop_per_s": peak / 1e9,
                "peak_median_gflop_per_s": peak_flops / t_peak.median / 1e9,
                "peak_matmul": f"{peak_n}^3 fp32",
                "mfu_diagnostics": step_flops / t_diag.median / peak,
                "overhead_median_s_diagnostics/none": t_diag.median / t_none.median,
                "overhead_min_s_diagnostics/none": t_diag.min / t_none.min,
                "none_tokens_per_s": tokens / t_none.median,
                "diagnostics_tokens_per_s": tokens / t_diag.median,
                "diagnostic_metrics": sorted(k for k in diag.metrics if k not in none.metrics),
                "none": t_none.as_dict(),
                "diagnostics": t_diag.as_dict(),
                "peak": t_peak.as_dict(),
                "peak_alone": t_peak_alone.as_dict(),
            }
            targets = {
                f"diagnostics overhead <= {OVERHEAD_TARGET:.2f}": overhead <= OVERHEAD_TARGET
            }
            if preset == "small" and on_cpu:  # the MFU target is stated for CPU
                key = f"mfu >= {MFU_TARGET} (small, >= {MFU_MIN_TOKENS} tokens, CPU)"
                met = MFU_TARGET <= mfu <= 1 and tokens >= MFU_MIN_TOKENS
                targets = {key: met, **targets}
            ratios = {"mfu": mfu, "overhead_diagnostics/none": overhead}
            layers = f" L={config.num_layers}" if overrides else ""
            rows.append(report.row(f"{preset}{layers} B={b}xT={t}", ratios, values, targets))
        del none, diag
    return rows
