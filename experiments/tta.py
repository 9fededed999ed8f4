"""TTA: which test-time adaptation methods recover accuracy on corrupted sklearn digits?

A BatchNorm MLP (``entropix.models.MLPClassifier``) is trained on clean digits, then adapted
online on corrupted test streams (gaussian noise, blur, contrast, impulse at several
severities; a label-sorted stream; batch size 1). Each batch is predicted first and then used
for one adaptation step of the BatchNorm affine parameters (the Tent protocol). Methods:
``source`` (no adaptation, running BN statistics), ``bn_stats`` (test-batch BN statistics, no
update), ``tent``, ``eata`` (with its Fisher anti-forgetting term, the Fisher estimated on
clean training digits, see :func:`eata_fisher`), ``sar`` (reliable
entropy + SAM step + model reset), ``deyo`` (patch-shuffle PLPD filter), ``tsallis``
(Tsallis-entropy Tent). Training the source model and every adaptation step go through the
train engine (``entropix.train``: ``fit`` for the source, the compiled step with only the norm
affine parameters trainable for adaptation). Writes ``tta.md`` (accuracy table) and
``tta.json``; ``source/metrics.jsonl`` holds the source training curve.
"""

import dataclasses
import json
from collections.abc import Callable
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
from entropix.train import TrainConfig, TrainState, fit, make_train_step
from experiments.reporting import markdown_table

METHODS = ("source", "bn_stats", "tent", "eata", "sar", "deyo", "tsallis")
LOG_EVERY = 20  # source training: a progress line every 5 * LOG_EVERY steps


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


class ProbEMA(nnx.Variable):
    """EATA's moving average of the test predictions (carried from step to step)."""


class Adapting(nnx.Module):
    """The source classifier during adaptation, with the state EATA threads through steps."""

    def __init__(self, classifier: nnx.Module, num_classes: int):
        self.classifier = classifier
        self.prob_ema = ProbEMA(jnp.zeros(num_classes))

    def __call__(self, x):
        return self.classifier(x)


def adapting(model, num_classes: int = 10, batch_stats: bool = True) -> Adapting:
    """A copy of the source ``model`` ready to adapt: BatchNorm on the test batch's
    statistics (``batch_stats``, train mode) or on its running ones (eval mode)."""
    adapted = Adapting(nnx.clone(model), num_classes)
    if batch_stats:
        adapted.train()
    else:
        adapted.eval()
    return adapted


def split_model(model):
    """(graphdef, affine, rest): the norm affine Params, and every other Param / variable."""
    return nnx.split(model, norm_affine_filter(model), ...)


def train_source(config: Config, x, y, run_dir):
    """Fit the BatchNorm MLP on clean digits with Adam and cross-entropy
    (``entropix.train.fit`` in ``run_dir``; batch t drawn with ``default_rng([seed, t])``);
    returns the model in eval mode."""

    def loss_fn(model, batch, key, controls):
        del key, controls
        logits = model(batch["x"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, {"train/accuracy": (logits.argmax(-1) == batch["y"]).mean()}

    def data(position, state):
        del state
        idx = np.random.default_rng([config.seed, position]).integers(0, len(y), config.train_batch)
        return {"x": x[idx], "y": y[idx]}

    def model_fn(rngs):
        model = MLPClassifier(64, 10, (config.hidden, config.hidden), rngs=rngs)
        model.train()
        return model

    result = fit(
        run_dir,
        model_fn=model_fn,
        optimizer=optax.adam(config.train_lr),
        loss_fn=loss_fn,
        data=data,
        config=TrainConfig(
            steps=config.train_steps,
            checkpoint_every=config.train_steps,
            keep=1,
            progress_every=5 * LOG_EVERY,
            tensorboard=False,
            seed=config.seed,
        ),
    )
    model = result.state.model()
    model.eval()
    return model


def eata_fisher(model, x, config: Config):
    """EATA's diagonal Fisher of the BN affine parameters: F = mean over batches of g_b^2, g_b
    the gradient of the cross-entropy with the source model's own predictions (pseudo labels)
    on batch b of the first ``eata_fisher_samples`` clean samples, BN in batch-statistics mode
    as during adaptation. Returns a pytree shaped like ``split_model(adapting(model))[1]``."""
    graphdef, affine, rest = split_model(adapting(model))

    @jax.jit
    def batch_grad(rest, xb):
        def ce(bn):
            # fresh variables at this trace level: train-mode BatchNorm writes its statistics
            logits = nnx.merge(graphdef, bn, jax.tree.map(jnp.asarray, rest))(xb)
            labels = jax.lax.stop_gradient(logits.argmax(-1))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        return jax.grad(ce)(affine)

    xs = np.asarray(x[: config.eata_fisher_samples])
    grads = [batch_grad(rest, jnp.asarray(xs[i : i + config.batch_size]))
             for i in range(0, len(xs), config.batch_size)]  # fmt: skip
    return fisher_diagonal(jax.tree.map(lambda *g: jnp.stack(g), *grads))


def _tta_loss(method: str, config: Config, model, fisher):
    """``loss_fn(model, batch, key, controls)`` of ``method`` on the batch's logits; its
    ``correct`` metric counts the batch's predictions (made before this batch's update)."""
    if method == "tsallis":
        loss = REGISTRY["tsallis_tta"].factory(q=config.tsallis_q)
    else:
        loss = REGISTRY[method].factory()
    anchor = split_model(adapting(model))[1] if method == "eata" else None

    def loss_fn(adapted, batch, key, controls):
        del controls
        logits = adapted(batch["x"])
        if method == "eata":
            value, (_, ema) = loss(logits, adapted.prob_ema[...])
            adapted.prob_ema[...] = ema
            affine = nnx.state(adapted, norm_affine_filter(adapted))
            value += fisher_penalty(affine, anchor, fisher, config.eata_fisher_beta)
        elif method == "deyo":
            shuffled = jax.lax.stop_gradient(adapted(patch_shuffle(key, batch["x"], 4)))
            value = loss(logits, shuffled)[0]
        else:
            value = loss(logits)[0]
        correct = jnp.sum(logits.argmax(-1) == batch["y"]).astype(jnp.float32)
        return value, {"correct": correct}

    return loss_fn


@dataclasses.dataclass(frozen=True)
class Adapter:
    """One method's online protocol: ``start(model)`` gives a fresh ``TrainState`` of the
    source model (only the norm affine parameters trainable), ``step(state, batch)`` predicts
    the batch and then adapts on it (``correct`` in its metrics)."""

    method: str
    start: Callable
    step: Callable


def make_adapter(method: str, config: Config, num_classes: int = 10, fisher=None, model=None):
    """The :class:`Adapter` of ``method``. Adaptation is one step of the train engine
    (``entropix.train.make_train_step``, compiled once per method and batch shape) on the
    norm affine parameters: SGD with momentum (Tent's), for ``sar`` wrapped in
    :func:`entropix.optim.sar` (SAM step + model recovery); ``source`` and ``bn_stats`` only
    predict (running / test-batch BatchNorm statistics). ``eata`` needs ``fisher`` (from
    :func:`eata_fisher`) and the source ``model`` (its affine parameters are EATA's anchor).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    if method == "eata" and (fisher is None or model is None):
        raise ValueError("method='eata' needs fisher=eata_fisher(model, clean_x, config), model=")
    opt = optax.sgd(config.lr, momentum=config.momentum)
    if method == "sar":
        opt = sar(opt, rho=config.sar_rho)
    predict_only = method in ("source", "bn_stats")

    def start(source):
        adapted = adapting(source, num_classes, batch_stats=method != "source")
        key = jax.random.PRNGKey(config.seed)
        state = TrainState.create(adapted, opt, rng=key, wrt=norm_affine_filter(adapted))
        return jax.device_put(state, jax.devices()[0])  # committed, as the step's outputs are

    if predict_only:

        @jax.jit
        def step(state, batch):
            logits = state.model()(batch["x"])
            return state, {"correct": jnp.sum(logits.argmax(-1) == batch["y"]).astype(float)}

    else:
        step = make_train_step(_tta_loss(method, config, model, fisher), donate=False)
    return Adapter(method, start, step)


def evaluate(adapter: Adapter, model, x, y, batch_size, order, seed) -> float:
    """Online accuracy of one adapter over one stream (predict, then adapt); ``model`` (the
    source classifier) is not modified."""
    state = adapter.start(model)
    correct = 0.0
    for xb, yb in stream(x, y, batch_size, order, np.random.default_rng(seed)):
        state, metrics = adapter.step(state, {"x": jnp.asarray(xb), "y": jnp.asarray(yb)})
        correct += float(metrics["correct"])
    return correct / len(y)


def run(config: Config, run_dir) -> dict:
    """Train the source model, evaluate every method on every stream, write the table."""
    run_dir = Path(run_dir)
    x, y, xt, yt = load_digits_split(seed=config.seed)
    model = train_source(config, x, y, run_dir / "source")
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
    adapters = {
        method: make_adapter(method, config, fisher=fisher, model=model)
        for method in config.methods
    }
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
