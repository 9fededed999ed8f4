"""Test-time RL: how far does RL get without labels, and at what rollout cost?

The same warmed-up policy (``base``, an ``experiments.grpo`` config; the supervised warm-up is
done once per seed and shared) is trained once per method on the RL trainer. A label-free
method's reward is a majority vote over each group's answers (``ttrl``, ``evol_rl``): the
task's labels are never read by its updates. The held-out greedy accuracy (``eval/accuracy``,
scored against the labels) is measured before RL and at the end; the labelled-reward GRPO run
is the reference. Each method's ``strategy`` is its rollout strategy (ETTRL's tree rollout
branches at high-entropy tokens), so the table also gives the rollout tokens each spent
(``rollout/tokens``, summed over the run). Writes one sub-run per method and seed and
``results.json`` / ``results.md`` (``experiments.reporting.save_results``).
"""

import dataclasses
import inspect
from pathlib import Path

import numpy as np

from entropix.config import ControllerSpec, ExperimentConfig, MethodSpec
from entropix.losses import get as get_method
from entropix.results import table
from entropix.rl import LossConfig
from entropix.train import read_metrics, tracked
from experiments import grpo
from experiments.reporting import save_results


@dataclasses.dataclass(frozen=True)
class Method:
    """One row: the loss, the rollout strategy and the controllers its terms read."""

    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    strategy: MethodSpec = dataclasses.field(default_factory=lambda: MethodSpec("sample"))
    controllers: tuple[ControllerSpec, ...] = ()


@dataclasses.dataclass(frozen=True)
class Config(ExperimentConfig):
    experiment: str = "ttrl"
    base: grpo.Config = dataclasses.field(default_factory=grpo.Config)
    methods: dict[str, Method] = dataclasses.field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)


def label_free(loss: LossConfig) -> bool:
    """Whether the loss's reward comes from a reward source that takes no task reward.

    Args:
        loss: a method's loss config; its first reward shaper is inspected.

    Returns:
        True when that shaper's factory has no ``rewards`` parameter (it never reads the
        labels); False without reward shapers.
    """
    if not loss.rewards:
        return False
    return "rewards" not in inspect.signature(get_method(loss.rewards[0].name).factory).parameters


def method_config(config: Config, name: str, seed: int) -> grpo.Config:
    """The RL config of method ``name``'s sub-run with ``seed``.

    Args:
        config: the sweep config.
        name: a key of ``config.methods``.
        seed: the sub-run's seed.

    Returns:
        ``config.base`` with that seed and name and the method's loss, controllers and
        rollout strategy.
    """
    method = config.methods[name]
    return dataclasses.replace(
        config.base,
        seed=seed,
        name=name,
        loss=method.loss,
        controllers=method.controllers,
        rollout=dataclasses.replace(config.base.rollout, strategy=method.strategy),
    )


def run_stats(run_dir: Path, vote_k: int | None = None) -> dict:
    """Held-out accuracy before / after RL (and maj@k of ``vote_k`` samples: how often the
    majority vote is right), rollout tokens and final training values.

    Args:
        run_dir: a finished sub-run's directory (reads its ``metrics.jsonl``).
        vote_k: the k of the logged ``eval/maj@k``; None when no samples were voted.

    Returns:
        ``{"eval_start", "eval_final", "vote_start", "vote_final", "tokens",
        "tokens_per_step", "final_accuracy", "final_entropy"}`` (``vote_*`` None without
        ``vote_k``; ``tokens``: rollout tokens summed over the run).
    """
    rows = read_metrics(run_dir)
    evals = [r for r in rows if "eval/accuracy" in r]
    steps = [r for r in rows if "rollout/tokens" in r]
    vote = f"eval/maj@{vote_k}"
    return {
        "eval_start": evals[0]["eval/accuracy"],
        "eval_final": evals[-1]["eval/accuracy"],
        "vote_start": evals[0][vote] if vote_k else None,
        "vote_final": evals[-1][vote] if vote_k else None,
        "tokens": float(np.sum([r["rollout/tokens"] for r in steps])),
        "tokens_per_step": float(np.mean([r["rollout/tokens"] for r in steps])),
        "final_accuracy": steps[-1]["accuracy"],
        "final_entropy": steps[-1]["entropy"],
    }


def run(config: Config, run_dir: str | Path) -> dict:
    """Train every method x seed (resuming sub-runs) and write ``results.json``.

    Args:
        config: the sweep config.
        run_dir: the run directory (one sub-run per method, or per method and seed with
            several seeds, and the shared warm-ups).

    Returns:
        ``{method: [stats per seed]}``: :func:`run_stats` plus ``label_free``.

    Raises:
        ValueError: ``methods`` is empty.
    """
    if not config.methods:
        raise ValueError("ttrl: `methods` is empty; name at least one method")
    run_dir = Path(run_dir)
    evaluation = config.base.train
    ks = evaluation.eval_k
    vote_k = max(ks) if evaluation.eval_samples and max(ks) > 1 else None
    rows, summary = [], {}
    runs = [(seed, name) for seed in config.seeds for name in config.methods]
    for seed, name in tracked(runs, "sweep", label=lambda r: f"{r[1]} seed {r[0]}"):
        method = config.methods[name]
        sub = run_dir / (name if len(config.seeds) == 1 else f"{name}_seed{seed}")
        grpo.run(method_config(config, name, seed), sub, sft_dir=run_dir / f"sft_seed{seed}")
        stats = {**run_stats(sub, vote_k), "label_free": label_free(method.loss)}
        summary.setdefault(name, []).append(stats)
        rows.append(
            [
                name,
                seed,
                "no" if stats["label_free"] else "yes",
                method.strategy.name,
                stats["eval_start"],
                stats["eval_final"],
                *([stats["vote_start"], stats["vote_final"]] if vote_k else []),
                stats["final_accuracy"],
                stats["final_entropy"],
                int(stats["tokens"]),
                stats["tokens_per_step"],
            ]
        )
    header = [
        "method",
        "seed",
        "labels read",
        "rollout",
        "held-out acc (before RL)",
        "held-out acc (final)",
        *(
            [f"held-out maj@{vote_k} (before RL)", f"held-out maj@{vote_k} (final)"]
            if vote_k
            else []
        ),
        "train acc (final batch)",
        "final entropy",
        "rollout tokens",
        "tokens / step",
    ]
    b = config.base
    notes = (
        f"{b.train.steps} RL steps of {b.rollout.prompts} prompts x {b.rollout.group_size} rows "
        f"after a {b.sft.steps}-step warm-up; held-out accuracy: greedy, "
        f"{b.train.eval_prompts} problems, scored with the labels"
        + (
            f"; maj@{vote_k}: the majority answer of {b.train.eval_samples} samples at the "
            "rollout temperature (how often the vote a label-free reward trusts is right)"
            if vote_k
            else ""
        )
        + ". 'train acc' is the labelled correctness of the last batch's replies (logged, "
        "never used by label-free updates)."
    )
    save_results(
        run_dir,
        config,
        tables=[table("ttrl", "Test-time RL without labels", header, rows, notes)],
    )
    return summary
