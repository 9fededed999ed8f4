"""Attention collapse: does sigmaReparam keep attention entropy (and training) stable at a high LR?

A small Llama decoder (``entropix.models``, ``tiny`` preset resized) is trained as a character
LM on the generated text corpus (``entropix.tasks.text``) with Adam at a high learning rate and
no warmup, once as is and once with sigmaReparam on every linear layer
(W_hat = gamma / sigma(W) * W, "Stabilizing Transformer Training by Preventing Attention Entropy
Collapse", Zhai et al. 2023). Each variant is an ``entropix.train.fit`` run (checkpointed,
resumable) in its own sub-directory. Logged every step: the LM loss, the step's ``optim/`` and
``guard/`` metrics (gradient norm, ...) and the normalised per-head attention entropy
H[b, h, q] / log(q + 1) averaged over batch and queries (``attn/L<l>H<h>``; ``entropy`` is the
mean over heads), all computed in the train step's forward pass. A step with a non-finite loss
or gradient is skipped (the step's guard) and counted in ``guard/nonfinite_total``. Writes
``results.json`` / ``results.md`` (the table of final loss and attention entropy per variant)
and ``plots/attention_heads.png``.
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from entropix.config import ExperimentConfig
from entropix.models import Llama, get_preset
from entropix.results import figure, table
from entropix.runs import metrics_table, series
from entropix.tasks import CharTokenizer, corpus, lm_windows
from entropix.train import TrainConfig, fit, read_metrics, tracked
from experiments.reporting import save_results

VARIANTS = ("baseline", "sigma_reparam")


@dataclasses.dataclass(frozen=True)
class Config(ExperimentConfig):
    experiment: str = "attention_collapse"
    dim: int = 64
    layers: int = 2
    heads: int = 4
    seq_len: int = 32
    batch_size: int = 32
    steps: int = 300
    lr: float = 3e-2
    sentences: int = 2000
    variants: tuple[str, ...] = VARIANTS
    log_every: int = 5  # progress lines every 10 * log_every steps


def head_entropy(entropy: ArrayLike) -> jax.Array:
    """Normalised attention entropy per layer and head ``[L, H]`` from entropy [L, B, H, T].

    H[b, h, q] / log(q + 1) (q + 1 keys under the causal mask), averaged over batch and the
    queries q >= 1 (the first query has a single key).

    Args:
        entropy: float ``[L, B, H, T]`` attention entropy in nats of each layer, example, head
            and query (the model's ``attention_entropy``); T >= 2.

    Returns:
        float ``[L, H]`` normalised entropy, 1 for uniform attention.
    """
    keys = jnp.arange(entropy.shape[-1], dtype=jnp.float32) + 1.0
    normalised = entropy[..., 1:] / jnp.log(keys[1:])
    return normalised.mean(axis=(1, 3))


def make_model(config: Config, variant: str, rngs: nnx.Rngs) -> Llama:
    """The ``tiny`` Llama preset at this experiment's sizes (sigmaReparam for that variant).

    Args:
        config: gives ``dim``, ``layers``, ``heads`` and ``seq_len``.
        variant: ``"baseline"`` or ``"sigma_reparam"`` (sigmaReparam on every linear layer).
        rngs: initialises the parameters.

    Returns:
        The freshly initialised model (character vocabulary).
    """
    preset = get_preset(
        "tiny",
        vocab_size=CharTokenizer().vocab_size,
        dim=config.dim,
        num_layers=config.layers,
        num_heads=config.heads,
        num_kv_heads=config.heads,
        ffn_dim=4 * config.dim,
        max_seq_len=config.seq_len,
        use_sigma_reparam=variant == "sigma_reparam",
    )
    return Llama(preset, rngs=rngs)


def lm_loss(
    model: Llama, windows: ArrayLike, key: jax.Array, controls: dict[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The next-character loss of ``windows [B, T + 1]`` and, from the same forward pass,
    ``entropy`` (mean over heads) and ``attn/L<l>H<h>`` (see :func:`head_entropy`).

    Args:
        model: the decoder being trained.
        windows: int ``[B, T + 1]`` token windows (inputs and next tokens).
        key: the micro-batch's PRNG key (unused: the loss is deterministic).
        controls: the train step's control values (unused).

    Returns:
        ``(loss, metrics)``: the mean cross-entropy in nats (scalar) and
        ``{"entropy": scalar, "attn/L<l>H<h>": scalar, ...}``.
    """
    out = model(windows[:, :-1], return_attention_entropy=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(out.logits, windows[:, 1:]).mean()
    heads = head_entropy(out.attention_entropy)
    metrics = {"entropy": heads.mean()}
    for layer, head in np.ndindex(heads.shape):
        metrics[f"attn/L{layer}H{head}"] = heads[layer, head]
    return loss, metrics


def train_variant(config: Config, variant: str, text: str, run_dir: Path) -> dict:
    """Train one variant with ``entropix.train.fit`` in ``run_dir/<variant>``; returns its
    summary row. Batch t is ``lm_windows`` drawn with ``default_rng([seed, t])``.

    Args:
        config: the experiment config.
        variant: one of :data:`VARIANTS`.
        text: the training corpus.
        run_dir: the experiment's run directory (the variant trains in a sub-directory).

    Returns:
        ``{"variant", "final_loss", "max_loss_after_start", "loss_spikes",
        "min_attention_entropy", "final_attention_entropy"}``; "final" means the mean of the
        last ``steps // 10`` steps.

    Raises:
        ValueError: an unknown ``variant``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of {', '.join(VARIANTS)}")

    def data(position, state):
        del state
        rng = np.random.default_rng([config.seed, position])
        return lm_windows(text, config.seq_len, config.batch_size, rng)

    fit(
        run_dir / variant,
        model_fn=lambda rngs: make_model(config, variant, rngs),
        optimizer=optax.adam(config.lr),
        loss_fn=lm_loss,
        data=data,
        config=TrainConfig(
            steps=config.steps,
            checkpoint_every=config.steps,
            keep=1,
            max_nonfinite=config.steps,  # a diverging run is the point: never stop it
            progress_every=10 * config.log_every,
            tensorboard=False,
            seed=config.seed,
        ),
    )
    records = read_metrics(run_dir / variant)
    losses = np.asarray([r["loss"] for r in records], np.float64)
    entropies = np.asarray([r["entropy"] for r in records], np.float64)
    tail = max(1, config.steps // 10)
    finite = losses[np.isfinite(losses)]
    return {
        "variant": variant,
        "final_loss": float(losses[-tail:].mean()),
        "max_loss_after_start": float(finite[tail:].max()) if len(finite) > tail else float("nan"),
        "loss_spikes": int(np.sum(np.diff(losses) > 0.5)),
        "min_attention_entropy": float(np.nanmin(entropies)),
        "final_attention_entropy": float(np.mean(entropies[-tail:])),
    }


def _plot_heads(run_dir: Path, config: Config) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(config.variants), figsize=(5 * len(config.variants), 3.5), squeeze=False, sharey=True
    )
    for ax, variant in zip(axes[0], config.variants, strict=True):
        table = metrics_table(run_dir / variant)
        for key in sorted(k for k in table if k.startswith("attn/")):
            ax.plot(*series(table, key), lw=0.8, label=key[5:])
        ax.set_title(f"{variant}: attention entropy per head")
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("H / log(keys)")
    axes[0][-1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    (run_dir / "plots").mkdir(exist_ok=True)
    fig.savefig(run_dir / "plots" / "attention_heads.png", dpi=80)
    plt.close(fig)


def run(config: Config, run_dir: str | Path) -> dict:
    """Train every variant on the same text and batches; write the table and head plot.

    Args:
        config: the experiment config.
        run_dir: the run directory (one sub-directory per variant, results, plots).

    Returns:
        ``{variant: {"final_loss": ..., ...}}``: each variant's summary row without its name.
    """
    run_dir = Path(run_dir)
    text = corpus(np.random.default_rng(config.seed), config.sentences)
    rows = [
        train_variant(config, variant, text, run_dir)
        for variant in tracked(config.variants, "sweep")
    ]
    header = list(rows[0])
    _plot_heads(run_dir, config)
    caption = "Normalised attention entropy H / log(keys) of every head over training, per variant."
    save_results(
        run_dir,
        config,
        tables=[
            table(
                "variants",
                "Attention entropy and loss at a high learning rate",
                header,
                [[r[k] for k in header] for r in rows],
                notes=f"final = mean of the last {max(1, config.steps // 10)} steps; loss_spikes: "
                "steps whose loss rose by more than 0.5.",
            )
        ],
        figures=[figure("attention_heads", "plots/attention_heads.png", caption)],
    )
    return {r["variant"]: {k: v for k, v in r.items() if k != "variant"} for r in rows}
