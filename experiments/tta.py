"""TTA: do the test-time adaptation methods hold up in SAR's wild settings on BN, GN and LN models?

Source classifiers (``entropix.models.MLPClassifier`` with BatchNorm, GroupNorm or LayerNorm;
one per norm and seed) are trained on clean sklearn digits with ``entropix.train.fit``, then
adapted online on corrupted test streams (``entropix.tasks.corrupted_stream``: the test split
cycled with fresh corruption noise each cycle, so a stream is as long as asked). Settings:

* ``iid``: each corruption at each of ``severities``, random order, batch ``batch_size``;
* the wild settings of SAR ("Towards Stable Test-Time Adaptation in Dynamic Wild World", Niu
  et al., ICLR 2023), each corruption at ``wild_severity``: ``label-sorted`` (online label
  shift: classes in turn), ``batch-1`` (random order, one image per step) and ``mixed`` (every
  corruption in one random stream, batch ``batch_size``).

Each batch is predicted and then used for one adaptation step of the norm layers' affine
parameters (Tent's protocol), the engine's compiled step (``entropix.train.make_train_step``)
scanned over the stream and vmapped over (seed, stream) lanes. Methods: ``source`` (no
adaptation; BatchNorm on its running statistics), ``bn_stats`` (BatchNorm on the test batch's
statistics, no update; BN models only), ``tent``, ``eata`` (with its Fisher anti-forgetting
term, the Fisher from clean training digits, :func:`eata_fisher`), ``sar`` (reliable entropy,
SAM step, model recovery), ``deyo`` (patch-shuffle PLPD filter), ``tsallis`` (Tsallis-entropy
Tent). The baseline of the adapting methods is ``bn_stats`` on BN models (what entropy
minimisation adds to test-batch statistics) and ``source`` on GN/LN models (no statistics).

Seed i (``seed + i``) trains its own source models and draws its own streams; tables report the
mean and 95% bootstrap interval over seeds (``entropix.results.bootstrap_interval``) of online
accuracy (the fraction of stream images predicted right before the update on their batch).
Writes ``results.json`` (tables ``tta_summary``, ``tta_vs_baseline``, ``tta_detail``,
``tta_source``, ``tta_diagnostics``; the figure ``tta_curves.png``; the SAR-paper claims as
targets) and ``results.md`` rendered from it (``experiments.reporting.save_results``);
``source_<norm>_<seed>/`` holds each source training run. ``entropix report RUN_DIR --out
docs/results`` publishes a run.
"""

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from entropix.config import ExperimentConfig
from entropix.losses import REGISTRY, fisher_diagonal, fisher_penalty
from entropix.losses.deyo import patch_shuffle
from entropix.models.classifiers import NORMS, MLPClassifier, norm_affine_filter
from entropix.optim import sar_optimizer
from entropix.results import (
    bootstrap_interval,
    figure,
    table,
    target,
)
from entropix.tasks import CORRUPTIONS, corrupted_stream, load_digits_split
from entropix.train import TrainConfig, TrainState, fit, make_train_step
from entropix.validation import check_choice
from experiments.reporting import save_results

METHODS = (
    "source", "bn_stats", "tent", "eata", "eata_scaled", "sar", "sar_scaled", "deyo", "tsallis"
)  # fmt: skip
SETTINGS = ("iid", "label-sorted", "batch-1", "mixed")
WILD = SETTINGS[1:]
PREDICT_ONLY = ("source", "bn_stats")
FILTERED = ("eata", "eata_scaled", "sar", "sar_scaled", "deyo")  # report "selected_fraction"
LOG_EVERY = 20  # source training: a progress line every 5 * LOG_EVERY steps
REFERENCE_BATCH = 64  # the batch size ``lr`` is given for (SAR's rule scales it below 32)


@dataclasses.dataclass(frozen=True)
class Config(ExperimentConfig):
    experiment: str = "tta"
    hidden: int = 128
    train_steps: int = 400
    train_batch: int = 64
    train_lr: float = 3e-3
    norms: tuple[str, ...] = NORMS
    num_groups: int = 8
    num_seeds: int = 3  # seeds seed, seed + 1, ...: each trains source models, draws streams
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = (3, 5)  # of the iid streams
    wild_severity: int = 5
    settings: tuple[str, ...] = SETTINGS
    methods: tuple[str, ...] = METHODS
    batch_size: int = 64
    steps: int = 120  # adaptation steps of every batched stream
    single_steps: int = 1078  # adaptation steps of every batch-1 stream (2 test-split cycles)
    lr: float = 0.05  # SGD learning rate at batch 64 (momentum 0.9, as Tent); see adaptation_lr
    momentum: float = 0.9
    sar_rho: float = 0.05
    tsallis_q: float = 0.5
    eata_fisher_beta: float = 2000.0  # EATA's beta (paper default)
    eata_fisher_samples: int = 512  # clean samples for the Fisher estimate (paper: 2000)


def check_config(config: Config) -> None:
    """Refuse a config this experiment cannot run, naming the key.

    Args:
        config: the experiment config.

    Raises:
        ValueError: an unknown norm, setting or method, a count below 1, or no corruptions.
    """
    for norm in config.norms:
        check_choice(norm, "norms", NORMS)
    for setting in config.settings:
        check_choice(setting, "settings", SETTINGS)
    for method in config.methods:
        check_choice(method, "methods", METHODS)
    for key in ("num_seeds", "steps", "single_steps", "batch_size", "train_steps"):
        if getattr(config, key) < 1:
            raise ValueError(f"{key} must be >= 1; got {getattr(config, key)}")
    if not config.corruptions:
        raise ValueError("corruptions must name at least one corruption")


def scaled_constants(num_classes: int) -> dict[str, float]:
    """EATA's redundancy margin and SAR's reset constant carried from ImageNet's 1000 classes
    (where the papers set eps = 0.05 and 0.2) to ``num_classes`` (our choice; the
    ``*_scaled`` methods use them, ``eata`` / ``sar`` keep the papers' values).

    Formula:
        eps(C)   = 0.05 * sqrt(1000 / C)   (the same multiple of 1/sqrt(C), the cosine of a
                                            one-hot prediction with a uniform average m)
        reset(C) = 0.2 * ln C / ln 1000    (the same fraction of the largest entropy ln C)

    At C = 10 the papers' values make both filters degenerate: every confident prediction is
    "redundant" (cos >= 0.05 with any average m), and the reliable entropy's average sits
    below 0.2 on easy streams, so SAR resets at every step (see the tta_diagnostics table).

    Args:
        num_classes: C, the number of classes (>= 2).

    Returns:
        ``{"redundancy_margin": eps(C), "reset_constant": reset(C)}``.

    Raises:
        ValueError: ``num_classes < 2``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2; got {num_classes}")
    return {
        "redundancy_margin": 0.05 * math.sqrt(1000 / num_classes),
        "reset_constant": 0.2 * math.log(num_classes) / math.log(1000),
    }


def adaptation_lr(lr: float, batch_size: int) -> float:
    """The adaptation learning rate at ``batch_size`` from ``lr`` at batch 64, by the rule of
    SAR's code: lr * 2 * batch_size / 64 below batch 32, ``lr`` otherwise (so batch 1 gets
    lr / 32).

    Args:
        lr: the learning rate at batch 64 (``Config.lr``).
        batch_size: the stream's batch size.

    Returns:
        The learning rate to adapt with.
    """
    return lr * 2 * batch_size / REFERENCE_BATCH if batch_size < 32 else lr


class ProbEMA(nnx.Variable):
    """EATA's moving average of the test predictions (carried from step to step)."""


class Adapting(nnx.Module):
    """The source classifier during adaptation, with the state EATA threads through steps."""

    def __init__(self, classifier: nnx.Module, num_classes: int):
        self.classifier = classifier
        self.prob_ema = ProbEMA(jnp.zeros(num_classes))

    def __call__(self, x):
        return self.classifier(x)


def adapting(model: nnx.Module, num_classes: int = 10, batch_stats: bool = True) -> Adapting:
    """A copy of the source ``model`` ready to adapt: BatchNorm on the test batch's
    statistics (``batch_stats``, train mode) or on its running ones (eval mode); GroupNorm and
    LayerNorm behave the same in both modes.

    Args:
        model: the source classifier (cloned, not modified).
        num_classes: the size of EATA's prediction average (zeros at the start).
        batch_stats: True: train mode (test-batch statistics); False: eval mode.

    Returns:
        The :class:`Adapting` wrapper around the copy.
    """
    adapted = Adapting(nnx.clone(model), num_classes)
    if batch_stats:
        adapted.train()
    else:
        adapted.eval()
    return adapted


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, affine, rest): the norm affine Params, and every other Param / variable.

    Args:
        model: a classifier (or its :class:`Adapting` wrapper).

    Returns:
        ``(graphdef, affine, rest)`` as :func:`flax.nnx.split` gives them.
    """
    return nnx.split(model, norm_affine_filter(model), ...)


def train_source(
    config: Config, norm: str, seed: int, x: np.ndarray, y: np.ndarray, run_dir: str | Path
) -> MLPClassifier:
    """Fit the ``norm`` MLP on clean digits with Adam and cross-entropy (``entropix.train.fit``
    in ``run_dir``, init and batches from ``seed``: batch t drawn with ``default_rng([seed,
    t])``); returns the model in eval mode.

    Args:
        config: gives the sizes and ``train_steps`` / ``train_batch`` / ``train_lr``.
        norm: one of ``NORMS`` (``batch``, ``group``, ``layer``).
        seed: the init and batch seed.
        x: clean training images float32 ``[N, 8, 8, 1]``.
        y: their int labels ``[N]``.
        run_dir: the training run's directory (resumed when it holds a checkpoint).

    Returns:
        The trained classifier, in eval mode.
    """

    def loss_fn(model, batch, key, controls):
        del key, controls
        logits = model(batch["x"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, {"train/accuracy": (logits.argmax(-1) == batch["y"]).mean()}

    def data(position, state):
        del state
        idx = np.random.default_rng([seed, position]).integers(0, len(y), config.train_batch)
        return {"x": x[idx], "y": y[idx]}

    def model_fn(rngs):
        hidden = (config.hidden, config.hidden)
        model = MLPClassifier(64, 10, hidden, norm=norm, num_groups=config.num_groups, rngs=rngs)
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
            seed=seed,
        ),
    )
    model = result.state.model()
    model.eval()
    return model


def eata_fisher(model: nnx.Module, x: np.ndarray, config: Config) -> Any:
    """EATA's diagonal Fisher of the norm affine parameters: F = mean over batches of g_b^2, g_b
    the gradient of the cross-entropy with the source model's own predictions (pseudo labels)
    on batch b of the first ``eata_fisher_samples`` clean samples, BN in batch-statistics mode
    as during adaptation. Returns a pytree shaped like ``split_model(adapting(model))[1]``.

    Args:
        model: the source classifier (not modified).
        x: clean images ``[N, 8, 8, 1]``; the first ``eata_fisher_samples`` are used.
        config: gives ``eata_fisher_samples`` and ``batch_size`` (the batches averaged).

    Returns:
        The Fisher pytree (non-negative leaves shaped like the affine parameters).
    """
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


def _tta_loss(method: str, config: Config, num_classes: int = 10):
    """``loss_fn(model, batch, key, controls)`` of ``method`` on the batch's logits; its
    ``correct`` metric counts the batch's predictions (made before this batch's update). EATA
    reads its anchor (the source affine parameters) and Fisher from the batch, where
    :func:`_with_frozen` puts them from ``TrainState.frozen``."""
    if method == "tsallis":
        loss = REGISTRY["tsallis_tta"].factory(q=config.tsallis_q)
    elif method == "eata_scaled":
        margin = scaled_constants(num_classes)["redundancy_margin"]
        loss = REGISTRY["eata"].factory(redundancy_margin=margin)
    else:
        loss = REGISTRY[method.removesuffix("_scaled")].factory()
    eata = method.startswith("eata")

    def loss_fn(adapted, batch, key, controls):
        del controls
        logits = adapted(batch["x"])
        metrics = {}
        if eata:
            value, (metrics, ema) = loss(logits, adapted.prob_ema[...])
            adapted.prob_ema[...] = ema
            affine = nnx.state(adapted, norm_affine_filter(adapted))
            value += fisher_penalty(
                affine, batch["anchor"], batch["fisher"], config.eata_fisher_beta
            )
        elif method == "deyo":
            shuffled = jax.lax.stop_gradient(adapted(patch_shuffle(key, batch["x"], 4)))
            value, metrics = loss(logits, shuffled)
        else:
            value, metrics = loss(logits)
        correct = jnp.sum(logits.argmax(-1) == batch["y"]).astype(jnp.float32)
        return value, {**metrics, "correct": correct}

    return loss_fn


def _with_frozen(model, frozen, batch, key, controls):
    """``prepare_fn`` handing ``TrainState.frozen`` (EATA's anchor and Fisher) to the loss."""
    del model, key, controls
    return {**batch, **frozen}, {}


@dataclasses.dataclass(frozen=True)
class Adapter:
    """One method's online protocol at one batch size: ``start(model, fisher=None)`` gives a
    fresh ``TrainState`` of the source model (only the norm affine parameters trainable),
    ``step(state, batch)`` predicts the batch and then adapts on it (``correct`` in its
    metrics), ``run(states, xs, ys)`` scans ``step`` over streams ``xs [L, T, B, ...]``
    (lane l from ``states`` stacked on axis 0) and returns the per-step metrics ``[L, T]``."""

    method: str
    batch_size: int
    start: Callable
    step: Callable
    run: Callable


def make_adapter(method: str, config: Config, batch_size: int, num_classes: int = 10) -> Adapter:
    """The :class:`Adapter` of ``method`` at ``batch_size``. Adaptation is one step of the train
    engine (``entropix.train.make_train_step``) on the norm affine parameters: SGD with momentum
    (Tent's) at :func:`adaptation_lr`, for ``sar`` / ``sar_scaled`` wrapped in
    :func:`entropix.optim.sar_optimizer` (SAM step + model recovery); ``source`` and
    ``bn_stats`` only predict (running / test-batch BatchNorm statistics). ``eata``'s and
    ``eata_scaled``'s ``start`` needs the ``fisher`` of :func:`eata_fisher`.

    Args:
        method: one of :data:`METHODS`.
        config: gives ``lr``, ``momentum``, ``sar_rho``, ``tsallis_q``, ``eata_fisher_beta``
            and ``seed``.
        batch_size: the streams' batch size (sets the learning rate).
        num_classes: C, for the ``*_scaled`` constants and EATA's average.

    Returns:
        The :class:`Adapter`.

    Raises:
        ValueError: an unknown ``method``.
    """
    check_choice(method, "method", METHODS)
    opt = optax.sgd(adaptation_lr(config.lr, batch_size), momentum=config.momentum)
    if method == "sar":
        opt = sar_optimizer(opt, rho=config.sar_rho)
    elif method == "sar_scaled":
        reset = scaled_constants(num_classes)["reset_constant"]
        opt = sar_optimizer(opt, rho=config.sar_rho, reset_constant=reset)
    eata = method.startswith("eata")

    def start(source, fisher=None):
        if eata and fisher is None:
            raise ValueError(f"method={method!r} needs start(model, fisher=eata_fisher(...))")
        adapted = adapting(source, num_classes, batch_stats=method != "source")
        frozen = {}
        if eata:
            frozen = {"anchor": split_model(adapted)[1], "fisher": fisher}
        key = jax.random.PRNGKey(config.seed)
        state = TrainState.create(
            adapted, opt, rng=key, wrt=norm_affine_filter(adapted), frozen=frozen
        )
        return jax.device_put(state, jax.devices()[0])  # committed, as the step's outputs are

    if method in PREDICT_ONLY:

        @jax.jit
        def step(state, batch):
            logits = state.model()(batch["x"])
            return state, {"correct": jnp.sum(logits.argmax(-1) == batch["y"]).astype(float)}

    else:
        prepare = _with_frozen if eata else None
        loss_fn = _tta_loss(method, config, num_classes)
        step = make_train_step(loss_fn, prepare_fn=prepare, donate=False)

    def one_stream(state, xs, ys):
        def body(state, batch):
            return step(state, batch)

        return jax.lax.scan(body, state, {"x": xs, "y": ys})[1]

    return Adapter(method, batch_size, start, step, jax.jit(jax.vmap(one_stream)))


def stack(trees: Sequence[Any]) -> Any:
    """Stack pytrees (same structure) on a new leading axis.

    Args:
        trees: pytrees of one structure and leaf shapes.

    Returns:
        The pytree whose leaves are ``[len(trees), ...]`` arrays.
    """
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def evaluate(
    adapter: Adapter,
    model: nnx.Module,
    xs: np.ndarray,
    ys: np.ndarray,
    fisher: Any = None,
) -> float:
    """Online accuracy of one adapter over one stream ``xs [T, B, ...]`` (predict, then
    adapt); ``model`` (the source classifier) is not modified.

    Args:
        adapter: the method's protocol (:func:`make_adapter`).
        model: the source classifier.
        xs: the stream's images ``[T, B, ...]``.
        ys: their labels ``[T, B]``.
        fisher: EATA's Fisher (:func:`eata_fisher`); None for the other methods.

    Returns:
        The fraction of the stream's images predicted right, in [0, 1].
    """
    state = stack([adapter.start(model, fisher)])
    correct = adapter.run(state, jnp.asarray(xs)[None], jnp.asarray(ys)[None])["correct"]
    return float(jnp.sum(correct)) / ys.size


@dataclasses.dataclass(frozen=True)
class Stream:
    """One test stream of a seed: its setting, what corrupts it and how it is served."""

    setting: str
    corruption: str  # a corruption kind, or "mixed"
    severity: int
    batch_size: int
    order: str
    steps: int
    kinds: tuple[str, ...]


def streams(config: Config) -> list[Stream]:
    """The streams of every seed, in table order.

    Args:
        config: gives the settings, corruptions, severities, batch size and steps.

    Returns:
        The :class:`Stream` s: per setting, iid (corruption x severity), label-sorted and
        batch-1 (one per corruption) and mixed (one).
    """
    out = []
    sev = config.wild_severity
    for setting in config.settings:
        if setting == "iid":
            out += [
                Stream(setting, kind, s, config.batch_size, "random", config.steps, (kind,))
                for kind in config.corruptions
                for s in config.severities
            ]
        elif setting == "label-sorted":
            out += [
                Stream(setting, k, sev, config.batch_size, setting, config.steps, (k,))
                for k in config.corruptions
            ]
        elif setting == "batch-1":
            out += [
                Stream(setting, k, sev, 1, "random", config.single_steps, (k,))
                for k in config.corruptions
            ]
        else:
            kinds = tuple(config.corruptions)
            out.append(
                Stream(setting, "mixed", sev, config.batch_size, "random", config.steps, kinds)
            )
    return out


def draw(
    stream: Stream, index: int, seed: int, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of ``stream`` (number ``index`` of the list) for ``seed``: cycles from
    ``default_rng([1000 * seed + index, cycle])``.

    Args:
        stream: the stream to draw.
        index: its position in :func:`streams`' list.
        seed: the seed (``config.seed + i``).
        x: the test images ``[N, 8, 8, 1]``.
        y: their labels ``[N]``.

    Returns:
        ``(xs [steps, batch, 8, 8, 1], ys [steps, batch])`` (:func:`corrupted_stream`).
    """
    return corrupted_stream(
        x,
        y,
        [(kind, stream.severity) for kind in stream.kinds],
        batch_size=stream.batch_size,
        steps=stream.steps,
        order=stream.order,
        seed=1000 * seed + index,
    )


def methods_for(config: Config, norm: str) -> list[str]:
    """The methods that apply to a ``norm`` model (``bn_stats`` needs BatchNorm).

    Args:
        config: gives the methods.
        norm: the model's norm.

    Returns:
        ``config.methods`` in order, without ``bn_stats`` unless ``norm`` is ``"batch"``.
    """
    return [m for m in config.methods if norm == "batch" or m != "bn_stats"]


def adapt_all(
    config: Config,
    norm: str,
    models: Sequence[nnx.Module],
    fishers: Sequence[Any],
    stream_list: Sequence[Stream],
    arrays: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
) -> dict[str, dict]:
    """Every method on every (seed, stream) lane of one norm. Returns {method: {"accuracy":
    [S, K], "curve": list of K arrays [S, T] (per-step accuracy), metric: [S, K] means}}.

    Args:
        config: the experiment config.
        norm: the models' norm.
        models: the S source classifiers, one per seed.
        fishers: per seed EATA's Fisher (:func:`eata_fisher`), or None when no method
            needs it.
        stream_list: the streams of every seed (:func:`streams`), in table order.
        arrays: ``arrays[i][k]``: seed i's ``(xs, ys)`` of stream k (:func:`draw`).

    Returns:
        ``{method: {"accuracy": [S, K], "curve": [K x [S, T]], "selected_fraction": [S, K],
        "optim/sar_resets": [S, K]}}`` (the last two only for the methods that log them;
        resets per 100 steps).
    """
    num_seeds, num_streams = len(models), len(stream_list)
    out = {}
    for method in methods_for(config, norm):
        acc = np.zeros((num_seeds, num_streams))
        curves: list = [None] * num_streams
        extra = {}
        for batch_size in sorted({s.batch_size for s in stream_list}):
            adapter = make_adapter(method, config, batch_size)
            ks = [k for k, s in enumerate(stream_list) if s.batch_size == batch_size]
            for steps in sorted({stream_list[k].steps for k in ks}):
                group = [k for k in ks if stream_list[k].steps == steps]
                lanes = [(i, k) for i in range(num_seeds) for k in group]
                states = stack([adapter.start(models[i], fishers[i]) for i, _ in lanes])
                xs = jnp.asarray(np.stack([arrays[i][k][0] for i, k in lanes]))
                ys = jnp.asarray(np.stack([arrays[i][k][1] for i, k in lanes]))
                metrics = jax.device_get(adapter.run(states, xs, ys))
                per_step = np.asarray(metrics["correct"]) / batch_size  # [L, T]
                for lane, (i, k) in enumerate(lanes):
                    acc[i, k] = per_step[lane].mean()
                for k in group:
                    curves[k] = np.stack([per_step[lane] for lane, (_, kk) in enumerate(lanes)
                                          if kk == k])  # fmt: skip
                for name in ("selected_fraction", "optim/sar_resets"):
                    if name in metrics:
                        values = np.asarray(metrics[name])
                        # resets: the count at the end of the stream, per 100 steps
                        reduce = (lambda v: 100 * v[-1] / len(v)) if "resets" in name else np.mean
                        grid = extra.setdefault(name, np.full((num_seeds, num_streams), np.nan))
                        for lane, (i, k) in enumerate(lanes):
                            grid[i, k] = reduce(values[lane])
        out[method] = {"accuracy": acc, "curve": curves, **extra}
    return out


def _cell(values) -> str:
    mean, lo, hi = bootstrap_interval(values)
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def baseline_of(norm: str) -> str:
    """The method an adapting method is compared with: BN statistics on BN, else no adaptation.

    Args:
        norm: the model's norm.

    Returns:
        ``"bn_stats"`` for ``"batch"``, else ``"source"``.
    """
    return "bn_stats" if norm == "batch" else "source"


def _setting_mean(results, method, stream_list, setting):
    """[S]: a method's online accuracy per seed, averaged over the setting's streams."""
    ks = [k for k, s in enumerate(stream_list) if s.setting == setting]
    return results[method]["accuracy"][:, ks].mean(axis=1)


def tables(
    config: Config,
    by_norm: dict,
    stream_list: Sequence[Stream],
    clean: dict,
    wall_s: float,
) -> list[dict]:
    """The results.json tables (see the module docstring); ``wall_s``: the run's wall time up
    to them, noted under the summary.

    Args:
        config: the experiment config.
        by_norm: per model norm, the :func:`adapt_all` results.
        stream_list: the streams of every seed (:func:`streams`), in table order.
        clean: per norm, the source models' clean test accuracy per seed.
        wall_s: seconds of wall time so far.

    Returns:
        The table entries ``tta_summary``, ``tta_vs_baseline``, ``tta_detail``,
        ``tta_source`` and ``tta_diagnostics``.
    """
    settings = [s for s in SETTINGS if s in config.settings]
    steps = {s.setting: f"{s.steps} x {s.batch_size}" for s in stream_list}
    summary_rows, delta_rows, detail_rows, diag_rows = [], [], [], []
    for norm, results in by_norm.items():
        base = baseline_of(norm)
        for setting in settings:
            cells = [
                _cell(_setting_mean(results, m, stream_list, setting)) if m in results else None
                for m in config.methods
            ]
            summary_rows.append([norm, setting, steps[setting], *cells])
            if base in results:
                ref = _setting_mean(results, base, stream_list, setting)
                for m in results:
                    if m in PREDICT_ONLY:
                        continue
                    diff = _setting_mean(results, m, stream_list, setting) - ref
                    delta_rows.append([norm, setting, m, base, *bootstrap_interval(diff)])
            for m in FILTERED:
                if m not in results:
                    continue
                ks = [k for k, s in enumerate(stream_list) if s.setting == setting]
                resets = results[m].get("optim/sar_resets")
                diag_rows.append([
                    norm, setting, m, float(np.mean(results[m]["selected_fraction"][:, ks])),
                    None if resets is None else float(np.mean(resets[:, ks])),
                ])  # fmt: skip
        for k, s in enumerate(stream_list):
            for m, r in results.items():
                detail_rows.append([
                    norm, s.setting, s.corruption, s.severity, s.batch_size, s.order, s.steps,
                    m, *bootstrap_interval(r["accuracy"][:, k]),
                ])  # fmt: skip
    seeds = config.num_seeds
    interval = f"mean and 95% bootstrap interval over {seeds} seeds"
    return [
        table(
            "tta_summary",
            f"Online accuracy per model and setting ({interval}; streams averaged per seed)",
            ["model", "setting", "steps x batch", *config.methods],
            summary_rows,
            notes="model: the MLP's norm (batch / group / layer). iid: every corruption at "
            f"severities {list(config.severities)}, random order; label-sorted, batch-1, "
            f"mixed: SAR's wild settings at severity {config.wild_severity}. '-': the method "
            "does not apply (BN statistics on a GN/LN model). Source training, adaptation and "
            f"tables took {wall_s:.0f} s of wall time.",
        ),
        table(
            "tta_vs_baseline",
            f"Online accuracy minus the baseline's, paired by seed ({interval})",
            ["model", "setting", "method", "baseline", "mean", "lo", "hi"],
            delta_rows,
            notes="baseline: bn_stats (test-batch statistics) on BN models, source (no "
            "adaptation) on GN/LN models. An interval that excludes 0 is a measured effect.",
        ),
        table(
            "tta_detail",
            f"Online accuracy per stream ({interval})",
            [
                "model",
                "setting",
                "corruption",
                "severity",
                "batch",
                "order",
                "steps",
                "method",
                "mean",
                "lo",
                "hi",
            ],  # fmt: skip
            detail_rows,
        ),
        table(
            "tta_source",
            f"Source models on the clean test split ({interval})",
            ["model", "mean", "lo", "hi"],
            [[norm, *bootstrap_interval(values)] for norm, values in clean.items()],
        ),
        table(
            "tta_diagnostics",
            "Filtered methods: fraction of samples adapted on, and SAR's resets",
            ["model", "setting", "method", "selected_fraction", "sar_resets_per_100_steps"],
            diag_rows,
            notes="selected_fraction: mean over steps of the fraction of the batch the "
            "method's filter keeps (EATA: reliable and non-redundant; SAR: entropy < 0.4 ln C; "
            "DeYO: confident and PLPD > 0.2). Means over seeds and the setting's streams.",
        ),
    ]


def targets(config: Config, by_norm: dict, stream_list: Sequence[Stream]) -> list[dict]:
    """SAR's claims (and Tent's over BN statistics) as targets with the measured values.

    Args:
        config: the experiment config.
        by_norm: per model norm, the :func:`adapt_all` results.
        stream_list: the streams of every seed (:func:`streams`), in table order.

    Returns:
        The target entries (each with the mean paired difference, or the fewest steps).
    """
    wild = [s for s in WILD if s in config.settings]
    out = []

    def diff(norm, a, b, settings):
        results = by_norm[norm]
        return np.mean(
            [_setting_mean(results, a, stream_list, s) - _setting_mean(results, b, stream_list, s)
             for s in settings], axis=0)  # fmt: skip

    for norm in by_norm:
        if norm == "batch" or not wild:
            continue
        have = by_norm[norm]
        if {"tent", "source"} <= set(have):
            mean, _, hi = bootstrap_interval(diff(norm, "tent", "source", wild))
            out.append(target(f"{norm} norm, wild settings: Tent below source (SAR paper)",
                              hi < 0, mean))  # fmt: skip
        if {"sar", "source"} <= set(have):
            mean, lo, _ = bootstrap_interval(diff(norm, "sar", "source", wild))
            out.append(target(f"{norm} norm, wild settings: SAR above source (SAR paper)",
                              lo > 0, mean))  # fmt: skip
        if {"sar", "tent"} <= set(have):
            mean, lo, _ = bootstrap_interval(diff(norm, "sar", "tent", wild))
            out.append(target(f"{norm} norm, wild settings: SAR above Tent (SAR paper)",
                              lo > 0, mean))  # fmt: skip
    if "batch" in by_norm and {"bn_stats", "source"} <= set(by_norm["batch"]):
        small = [s for s in ("label-sorted", "batch-1") if s in config.settings]
        if small:
            mean, _, hi = bootstrap_interval(diff("batch", "bn_stats", "source", small))
            out.append(target("batch norm, label-sorted and batch-1: test-batch statistics "
                              "below source (SAR paper)", hi < 0, mean))  # fmt: skip
    if "batch" in by_norm and {"tent", "bn_stats"} <= set(by_norm["batch"]):
        if "iid" in config.settings:
            mean, lo, _ = bootstrap_interval(diff("batch", "tent", "bn_stats", ["iid"]))
            out.append(target("batch norm, iid: Tent above test-batch statistics (Tent paper)",
                              lo > 0, mean))  # fmt: skip
    fewest = min(s.steps for s in stream_list)
    out.append(target("every stream has >= 100 adaptation steps", fewest >= 100, fewest))
    return out


def plot_curves(config: Config, by_norm: dict, stream_list: Sequence[Stream], path: Path) -> None:
    """Cumulative online accuracy along the stream, per model (rows) and setting (columns):
    the mean over seeds and the setting's streams.

    Args:
        config: gives the settings.
        by_norm: per model norm, the :func:`adapt_all` results.
        stream_list: the streams of every seed (:func:`streams`), in table order.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in SETTINGS if s in config.settings]
    rows, cols = len(by_norm), len(settings)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for r, (norm, results) in enumerate(by_norm.items()):
        for c, setting in enumerate(settings):
            ax = axes[r][c]
            ks = [k for k, s in enumerate(stream_list) if s.setting == setting]
            for method, result in results.items():
                curve = np.mean([result["curve"][k].mean(axis=0) for k in ks], axis=0)
                running = np.cumsum(curve) / np.arange(1, len(curve) + 1)
                color = f"C{METHODS.index(method)}"  # one colour per method in every panel
                ax.plot(np.arange(1, len(curve) + 1), running, label=method, lw=1.2, color=color)
            ax.set_title(f"{norm} norm, {setting}", fontsize=9)
            ax.set_xlabel("adaptation step", fontsize=8)
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel("online accuracy so far", fontsize=8)
    handles, labels = [], []
    for ax in axes.flat:  # the first panel may lack bn_stats: collect every label once
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config: Config, run_dir: str | Path) -> dict:
    """Train the source models, run every method on every stream, write results.json.

    Args:
        config: the experiment config (checked by :func:`check_config`).
        run_dir: the run directory (source runs, ``tta_curves.png``, results).

    Returns:
        ``{"wall_s": seconds, "<norm>/mean_accuracy/<method>": accuracy, ...}``: each
        method's online accuracy averaged over seeds and streams.
    """
    check_config(config)
    start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    x, y, xt, yt = load_digits_split(seed=config.seed)
    seeds = [config.seed + i for i in range(config.num_seeds)]
    stream_list = streams(config)
    arrays = [[draw(s, k, seed, xt, yt) for k, s in enumerate(stream_list)] for seed in seeds]
    by_norm, clean = {}, {}
    for norm in config.norms:
        models = [
            train_source(config, norm, s, x, y, run_dir / f"source_{norm}_{s}") for s in seeds
        ]
        clean[norm] = [float(jnp.mean(m(jnp.asarray(xt)).argmax(-1) == yt)) for m in models]
        needs_fisher = any(m.startswith("eata") for m in config.methods)
        fishers = [eata_fisher(m, x, config) if needs_fisher else None for m in models]
        by_norm[norm] = adapt_all(config, norm, models, fishers, stream_list, arrays)
    plot_curves(config, by_norm, stream_list, run_dir / "tta_curves.png")
    wall = time.perf_counter() - start
    save_results(
        run_dir,
        config,
        tables=tables(config, by_norm, stream_list, clean, wall),
        figures=[
            figure(
                "tta_curves",
                "tta_curves.png",
                "Cumulative online accuracy along the stream (mean over seeds and the "
                "setting's streams), per model (rows) and setting (columns)",
            )
        ],  # fmt: skip
        targets=targets(config, by_norm, stream_list),
    )
    summary = {"wall_s": wall}
    for norm, results in by_norm.items():
        for m, r in results.items():
            summary[f"{norm}/mean_accuracy/{m}"] = float(np.mean(r["accuracy"]))
    return summary
