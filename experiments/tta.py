"""TTA: which test-time adaptation methods recover accuracy on corrupted sklearn digits?

A BatchNorm MLP (``entropix.models.MLPClassifier``) is trained on clean digits, then adapted
online on corrupted test streams (gaussian noise, blur, contrast, impulse at several
severities; a label-sorted stream; batch size 1). Each batch is predicted first and then used
for one adaptation step of the BatchNorm affine parameters (the Tent protocol). Methods:
``source`` (no adaptation, running BN statistics), ``bn_stats`` (test-batch BN statistics, no
update), ``tent``, ``eata`` (with its Fisher anti-forgetting term, the Fisher estimated on
clean training digits, see :func:`eata_fisher`), ``sar`` (reliable
entropy + SAM step + model reset), ``deyo`` (patch-shuffle PLPD filter), ``tsallis``
(Tsallis-entropy Tent). Writes ``tta.md`` (accuracy table) and ``tta.json``;
``metrics.jsonl`` holds the source training curve.
"""

import contextlib
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from entropix.config import ExperimentConfig
from entropix.losses import REGISTRY, fisher_diagonal, fisher_penalty
from entropix.losses.deyo import patch_shuffle
from entropix.models.classifiers import MLPClassifier, norm_affine_filter
from entropix.optim import sar
from entropix.tasks import CORRUPTIONS, corrupt, load_digits_split, stream
from entropix.train import MetricsLogger
from experiments.reporting import markdown_table

METHODS = ("source", "bn_stats", "tent", "eata", "sar", "deyo", "tsallis")
LOG_EVERY = 20  # source training: log every LOG_EVERY steps (and the first)


@dataclasses.dataclass(frozen=True)
class Config(ExperimentConfig):
    experiment: str = "tta"
    hidden: int = 128
    train_steps: int = 400
    train_batch: int = 64
    train_lr: float = 3e-3
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = (1, 3, 5)
    methods: tuple[str, ...] = METHODS
    batch_size: int = 64
    lr: float = 0.05  # adaptation SGD learning rate (momentum 0.9, as Tent)
    momentum: float = 0.9
    sar_rho: float = 0.05
    tsallis_q: float = 0.5
    eata_fisher_beta: float = 2000.0  # EATA's beta (paper default)
    eata_fisher_samples: int = 512  # clean samples for the Fisher estimate (paper: 2000)
    extra_streams: bool = True  # label-sorted and batch-size-1 streams on corruptions[0]


def split_model(model):
    """(graphdef, affine, rest): the norm affine Params, and every other Param / BN statistic."""
    graphdef, affine, rest = nnx.split(model, norm_affine_filter(model), ...)
    return graphdef, affine, rest


def forward(graphdef, affine, rest, x, batch_stats: bool):
    """Logits ``[B, 10]``; ``batch_stats`` normalises by the batch's statistics (train mode)."""
    # fresh Variables at this trace level: train-mode BatchNorm writes its running statistics
    affine, rest = jax.tree.map(jnp.asarray, (affine, rest))
    model = nnx.merge(graphdef, affine, rest)
    if batch_stats:
        model.train()
    else:
        model.eval()
    return model(x)


def train_source(config: Config, x, y, log: MetricsLogger):
    """Fit the BatchNorm MLP on clean digits with Adam and cross-entropy; returns the model."""
    model = MLPClassifier(64, 10, (config.hidden, config.hidden), rngs=nnx.Rngs(config.seed))
    optimizer = nnx.Optimizer(model, optax.adam(config.train_lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xb, yb):
        def loss_fn(model):
            logits = model(xb)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, (logits.argmax(-1) == yb).mean()

        (loss, acc), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, acc

    rng = np.random.default_rng(config.seed)
    model.train()
    for t in range(config.train_steps):
        idx = rng.integers(0, len(y), config.train_batch)
        loss, acc = step(model, optimizer, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
        if t == 0 or (t + 1) % LOG_EVERY == 0 or t == config.train_steps - 1:
            log.log(t + 1, {"train/loss": loss, "train/accuracy": acc})
    model.eval()
    return model


def eata_fisher(model, x, config: Config):
    """EATA's diagonal Fisher of the BN affine parameters: F = mean over batches of g_b^2, g_b
    the gradient of the cross-entropy with the source model's own predictions (pseudo labels)
    on batch b of the first ``eata_fisher_samples`` clean samples, BN in batch-statistics mode
    as during adaptation. Returns a pytree shaped like ``split_model(model)[1]``."""
    graphdef, affine, rest = split_model(model)

    @jax.jit
    def batch_grad(xb):
        def ce(bn):
            logits = forward(graphdef, bn, rest, xb, True)
            labels = jax.lax.stop_gradient(logits.argmax(-1))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        return jax.grad(ce)(affine)

    xs = np.asarray(x[: config.eata_fisher_samples])
    grads = [batch_grad(jnp.asarray(xs[i : i + config.batch_size]))
             for i in range(0, len(xs), config.batch_size)]  # fmt: skip
    return fisher_diagonal(jax.tree.map(lambda *g: jnp.stack(g), *grads))


def make_adapter(method: str, config: Config, num_classes: int = 10, fisher=None):
    """(init, step) for ``method``: ``init(affine) -> state`` and the jitted
    ``step(state, rest, x, key, graphdef) -> (state, logits)`` with ``graphdef, rest`` from
    :func:`split_model`. ``eata`` needs ``fisher`` (from :func:`eata_fisher`): its loss adds
    ``beta * sum F (theta - theta_0)^2`` with theta_0 the affine parameters ``init`` got.

    Only the BN affine parameters adapt; predictions are made before the update. SAR's
    optimizer is :func:`entropix.optim.sar` (SAM step + model recovery) around the SGD of the
    other methods; its reliable-entropy filter is in its loss. The step is compiled once per
    method and batch shape, whatever the stream.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    if method == "eata" and fisher is None:
        raise ValueError("method='eata' needs fisher=eata_fisher(model, clean_x, config)")
    opt = optax.sgd(config.lr, momentum=config.momentum)
    opt = sar(opt, rho=config.sar_rho) if method == "sar" else optax.with_extra_args_support(opt)
    if method == "tsallis":
        loss = REGISTRY["tsallis_tta"].factory(q=config.tsallis_q)
    elif method not in ("source", "bn_stats"):
        loss = REGISTRY[method].factory()

    def logits_of(bn, model, x, batch_stats):
        rest, graphdef = model
        return forward(graphdef, bn, rest, x, batch_stats)

    def objective(bn, state, model, x, key):
        logits = logits_of(bn, model, x, True)
        if method == "eata":
            value, (_, ema) = loss(logits, state["prob_ema"])
            value += fisher_penalty(bn, state["anchor"], fisher, config.eata_fisher_beta)
            return value, (logits, {"prob_ema": ema})
        if method == "deyo":
            frozen_bn = jax.lax.stop_gradient(bn)
            shuffled = logits_of(frozen_bn, model, patch_shuffle(key, x, 4), True)
            return loss(logits, shuffled)[0], (logits, {})
        return loss(logits)[0], (logits, {})

    def step(state, rest, x, key, graphdef):
        model = (rest, graphdef)
        if method in ("source", "bn_stats"):
            return state, logits_of(state["bn"], model, x, method == "bn_stats")
        grad_fn = jax.value_and_grad(objective, has_aux=True)
        (_, (logits, extra)), grads = grad_fn(state["bn"], state, model, x, key)
        value_and_grad_fn = jax.value_and_grad(lambda b: objective(b, state, model, x, key)[0])
        updates, opt_state = opt.update(
            grads, state["opt"], state["bn"], value_and_grad_fn=value_and_grad_fn
        )
        new = {**state, **extra, "bn": optax.apply_updates(state["bn"], updates), "opt": opt_state}
        return new, logits

    def init(bn0):
        state = {"bn": bn0, "opt": opt.init(bn0)}
        if method == "eata":
            state["prob_ema"] = jnp.zeros(num_classes)
            state["anchor"] = bn0
        return state

    return init, jax.jit(step, static_argnames="graphdef")


def evaluate(adapter, model, x, y, batch_size, order, seed) -> float:
    """Online accuracy of one ``make_adapter`` pair over one stream (predict, then adapt);
    ``model`` (the source classifier) is not modified."""
    init, step = adapter
    graphdef, affine, rest = split_model(model)
    state = init(affine)
    key = jax.random.key(seed)
    correct = 0
    for i, (xb, yb) in enumerate(stream(x, y, batch_size, order, np.random.default_rng(seed))):
        state, logits = step(state, rest, jnp.asarray(xb), jax.random.fold_in(key, i), graphdef)
        correct += int((np.asarray(logits).argmax(-1) == yb).sum())
    return correct / len(y)


def run(config: Config, run_dir) -> dict:
    """Train the source model, evaluate every method on every stream, write the table."""
    run_dir = Path(run_dir)
    x, y, xt, yt = load_digits_split(seed=config.seed)
    logger = MetricsLogger(run_dir, total_steps=config.train_steps, progress_every=5 * LOG_EVERY)
    with contextlib.closing(logger) as log:
        model = train_source(config, x, y, log)
    rng = np.random.default_rng(config.seed)
    streams = [("clean", 0, xt, config.batch_size, "random")]
    for kind in config.corruptions:
        for severity in config.severities:
            streams.append(
                (kind, severity, corrupt(xt, kind, severity, rng), config.batch_size, "random")
            )
    if config.extra_streams and config.corruptions:
        kind, severity = config.corruptions[0], max(config.severities)
        xc = corrupt(xt, kind, severity, np.random.default_rng(config.seed + 1))
        streams.append((kind, severity, xc, config.batch_size, "label-sorted"))
        streams.append((kind, severity, xc, 1, "random"))
    fisher = eata_fisher(model, x, config) if "eata" in config.methods else None
    adapters = {method: make_adapter(method, config, fisher=fisher) for method in config.methods}
    results = []
    for kind, severity, xs, batch_size, order in streams:
        row = {"corruption": kind, "severity": severity, "batch_size": batch_size, "order": order}
        for method in config.methods:
            row[method] = evaluate(adapters[method], model, xs, yt, batch_size, order, config.seed)
        results.append(row)
    header = ["corruption", "severity", "batch", "order", *config.methods]
    rows = [
        [r["corruption"], r["severity"], r["batch_size"], r["order"]]
        + [r[m] for m in config.methods]
        for r in results
    ]
    (run_dir / "tta.md").write_text(markdown_table(header, rows) + "\n")
    (run_dir / "tta.json").write_text(json.dumps(results, indent=2))
    main = [
        r
        for r in results
        if r["corruption"] != "clean"
        and r["order"] == "random"
        and r["batch_size"] == config.batch_size
    ]
    return {f"mean_accuracy/{m}": float(np.mean([r[m] for r in main])) for m in config.methods}
