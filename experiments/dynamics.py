"""Dynamics: does the first-order covariance law predict each step's entropy change?

Question: for a softmax policy trained by policy gradient, does dH ~= -Cov_{a~pi}(log pi, dz)
("The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models", Cui et al.
2025) track the measured entropy change step by step, and does reward follow
R = -a exp(H) + b with a predictable ceiling b - a?

Two settings: (1) a tabular K-armed softmax bandit trained by exact vanilla or natural policy
gradient on J = E_pi r, where H and dH are exactly computable; :func:`run_bandit` is a pure
function of a PRNG key, so seeds are ``jax.vmap``-ped into one compiled program; (2) the tiny
GRPO run (``grpo`` section, optional) on the RL trainer, whose logged steps hold
``dH/measured`` (entropy of the same batch after minus before the step's updates) and
``dH/predicted`` (its exact first-order prediction <grad H, delta theta> along the update the
optimiser made; ``entropix.rl.update``), the logit-space law and the sampled-token estimator
beside it, and the prediction's token-group parts (``entropix.dynamics.telemetry``).

``results.json`` / ``results.md`` hold the bandit's agreement and law fit, the GRPO run's
``entropix.runs.dynamics_table`` (prefixed ``grpo_``), the targets (bandit corr >= 0.99;
GRPO corr(dH/predicted, dH/measured) >= 0.95 and median |pred - meas| / |meas| <= 0.2) and the
plots of ``entropix plot``. With ``grpo_seeds`` the GRPO run is repeated for each further seed
(``grpo_seed<s>/``) and a ``seeds`` table gives every seed's agreement with the mean and 95%
bootstrap interval over seeds; the targets are then judged on every seed and on the mean. A
``residuals`` table gives each seed's step with the largest squared residual, its share of the
total, and how far that step moved a sampled token's log-prob (``dlogp/max``) against the
median step: where the first-order prediction misses, and whether the step was first order;
beside it the agreement on the steps whose ``dlogp/max`` stayed within 1 nat (how many, corr,
median relative error), and, where the run logged it (``dynamics.second_order``), the
agreement of the Taylor series to second order along the update (``dH/second_order``): what
the first order misses through the curvature of H along delta. The targets themselves are
judged on the first order on every step.
"""

import contextlib
import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from entropix.config import ExperimentConfig
from entropix.dynamics import (
    collapse_step,
    fit_entropy_performance,
    pg_logit_update,
    predicted_entropy_change,
)
from entropix.results import bootstrap_interval, target
from entropix.results import table as results_table
from entropix.runs import correlation, dynamics_table, metrics_table, series
from entropix.train import MetricsLogger
from experiments import grpo as grpo_experiment
from experiments.reporting import plot_figures, save_results


@dataclasses.dataclass(frozen=True)
class BanditConfig:
    """A K-armed bandit, arm rewards r ~ U(0, 1), logits z0 ~ N(0, init_scale^2)."""

    arms: int = 10
    steps: int = 200
    lr: float = 0.5
    natural: bool = False  # natural PG (dz = lr A) instead of vanilla PG (dz = lr pi A)
    init_scale: float = 1.0
    seeds: int = 8


@dataclasses.dataclass(frozen=True)
class Config(ExperimentConfig):
    experiment: str = "dynamics"
    bandit: BanditConfig = dataclasses.field(default_factory=BanditConfig)
    grpo: grpo_experiment.Config | None = None
    grpo_seeds: tuple[int, ...] = ()  # further seeds of the GRPO run, each in grpo_seed<s>/
    collapse_fraction: float = 0.25


def _entropy(z):
    logp = jax.nn.log_softmax(z)
    return -jnp.sum(jnp.exp(logp) * logp)


def run_bandit(key: jax.Array, config: BanditConfig) -> dict[str, jax.Array]:
    """One seed of exact softmax PG on a bandit: per-step curves, each ``[steps]``.

    Returns ``entropy`` (before the step), ``reward`` (E_pi r before the step),
    ``dH/predicted`` (-Cov(log pi, dz) of the step's update) and ``dH/measured``
    (H(z + dz) - H(z)). Pure and jit/vmap-able in ``key``.

    Args:
        key: the PRNG key of the seed (draws arm rewards and initial logits).
        config: the bandit (static under ``jit``).

    Returns:
        ``{"entropy", "reward", "dH/predicted", "dH/measured"}``, each float32 ``[steps]``
        (entropies in nats).
    """
    k_r, k_z = jax.random.split(key)
    rewards = jax.random.uniform(k_r, (config.arms,))
    z0 = config.init_scale * jax.random.normal(k_z, (config.arms,))

    def step(carry, _):
        z, h = carry  # h = H(z), measured at the end of the previous step
        dz = pg_logit_update(z, rewards, config.lr, config.natural)
        h_next = _entropy(z + dz)
        out = {
            "entropy": h,
            "reward": jnp.sum(jnp.exp(jax.nn.log_softmax(z)) * rewards),
            "dH/predicted": predicted_entropy_change(z, dz),
            "dH/measured": h_next - h,
        }
        return (z + dz, h_next), out

    _, curves = jax.lax.scan(step, (z0, _entropy(z0)), None, length=config.steps)
    return curves


def run_bandit_seeds(key: jax.Array, config: BanditConfig) -> dict[str, jax.Array]:
    """``config.seeds`` bandits in one compiled, vmapped program: curves ``[seeds, steps]``.

    Args:
        key: split into one key per seed.
        config: the bandit.

    Returns:
        The curves of :func:`run_bandit`, each float32 ``[seeds, steps]``.
    """
    keys = jax.random.split(key, config.seeds)
    return jax.jit(jax.vmap(run_bandit, in_axes=(0, None)), static_argnums=1)(keys, config)


def _law(entropy, reward, fraction) -> dict:
    fit = fit_entropy_performance(
        jnp.asarray(entropy, jnp.float32), jnp.asarray(reward, jnp.float32)
    )
    step = int(collapse_step(jnp.asarray(entropy, jnp.float32), fraction))
    return {
        "fit_a": float(fit.a),
        "fit_b": float(fit.b),
        "ceiling": float(fit.ceiling),
        "fit_r2": float(fit.r2),
        "collapse_step": step if step >= 0 else None,
    }


def run(config: Config, run_dir: str | Path) -> dict:
    """Run the bandit seeds (and the GRPO run if configured); write metrics and tables.

    Args:
        config: the experiment config.
        run_dir: the run directory (``bandit/``, ``grpo/``, results).

    Returns:
        The summary: ``bandit_corr``, ``bandit_rel_error``, ``bandit_fit_*`` /
        ``bandit_ceiling`` / ``bandit_collapse_step``, with GRPO ``grpo_<dynamics row>``,
        ``grpo_collapse_step`` and ``grpo_final_reward``, and ``targets`` (text -> met).
    """
    run_dir = Path(run_dir)
    bandit = config.bandit
    if config.grpo_seeds:
        if config.grpo is None:
            raise ValueError("grpo_seeds: the further GRPO seeds need a grpo section")
        seeds = [config.grpo.seed, *config.grpo_seeds]
        if len(set(seeds)) < len(seeds):
            raise ValueError(
                f"grpo_seeds: {list(config.grpo_seeds)} repeats a seed (grpo.seed is "
                f"{config.grpo.seed})"
            )
    curves = jax.device_get(run_bandit_seeds(jax.random.key(config.seed), bandit))
    bandit_dir = run_dir / "bandit"
    logger = MetricsLogger(
        bandit_dir, total_steps=bandit.steps, tensorboard=False, progress_every=bandit.steps
    )
    with contextlib.closing(logger) as log:  # seed-mean curves; step t + 1 = the (t + 1)-th update
        for t in range(bandit.steps):
            log.log(t + 1, {k: float(v[:, t].mean()) for k, v in curves.items()})
    np.savez(bandit_dir / "curves.npz", **{k.replace("/", "_"): v for k, v in curves.items()})
    summary = {
        "bandit_corr": correlation(
            np.ravel(curves["dH/predicted"]), np.ravel(curves["dH/measured"])
        ),
        "bandit_rel_error": float(
            np.abs(curves["dH/predicted"] - curves["dH/measured"]).sum()
            / np.abs(curves["dH/measured"]).sum()
        ),
        **{
            f"bandit_{k}": v
            for k, v in _law(
                curves["entropy"].mean(0), curves["reward"].mean(0), config.collapse_fraction
            ).items()
        },
    }
    checks = [("bandit corr >= 0.99", summary["bandit_corr"], summary["bandit_corr"] >= 0.99)]
    if config.grpo is not None:
        grpo_summary = grpo_experiment.run(config.grpo, run_dir / "grpo", report=False)
        table = metrics_table(run_dir / "grpo")
        summary.update({f"grpo_{k}": v for k, v in dynamics_table(table).items()})
        _, entropy = series(table, "entropy")
        step = int(collapse_step(jnp.asarray(entropy, jnp.float32), config.collapse_fraction))
        summary["grpo_collapse_step"] = step if step >= 0 else None
        summary["grpo_final_reward"] = grpo_summary.get("final_reward")
        corr, rel = summary["grpo_dH/predicted/corr"], summary["grpo_dH/predicted/median_rel_error"]
        checks.append(("GRPO corr(dH pred, dH meas) >= 0.95", corr, corr >= 0.95))
        checks.append(("GRPO median abs(pred - meas) / abs(meas) <= 0.2", rel, rel <= 0.2))
    rows = [[k, v] for k, v in summary.items()]
    tables = [
        results_table("dynamics", "Entropy dynamics: bandit and GRPO", ["quantity", "value"], rows)
    ]
    if config.grpo is not None and config.grpo_seeds:
        seed_tables, seed_checks = _seeds(config, run_dir, summary)
        tables += seed_tables
        checks += seed_checks
    summary["targets"] = {text: bool(ok) for text, _, ok in checks}
    save_results(
        run_dir,
        config,
        tables=tables,
        figures=plot_figures(run_dir),
        targets=[target(text, ok, value) for text, value, ok in checks],
    )
    return summary


SEED_COLUMNS = (
    "dH/predicted/corr",
    "dH/predicted/median_rel_error",
    "dH/predicted/r2_identity",
    "dH/logit_law/corr",
)
RESIDUAL_COLUMNS = (  # entropix.runs.residual_summary: the step the first order misses most
    "dH/residual/worst_step",
    "dH/residual/worst_share",
    "dlogp/max/at_worst",
    "dlogp/max/median",
    # entropix.runs.small_step_summary: the agreement on the steps with dlogp/max <= 1 nat
    "dH/small_steps/steps",
    "dH/small_steps/corr",
    "dH/small_steps/median_rel_error",
    # the Taylor series to second order along the update (dynamics.second_order), on every step
    "dH/second_order/corr",
    "dH/second_order/median_rel_error",
)


def seed_targets(corr: list[float], rel: list[float]) -> list[tuple[str, float, bool]]:
    """The GRPO targets over seeds: corr >= 0.95 on every seed and on the mean, median relative
    error <= 0.2 on every seed. A seed whose figure is NaN (fewer than 2 probed steps, or a
    constant series) fails the every-seed targets and the mean.

    Args:
        corr: each seed's corr(dH/predicted, dH/measured).
        rel: each seed's median |pred - meas| / |meas|.

    Returns:
        ``[(target text, value, met)]``: the worst seed's value for the every-seed targets.
    """
    corr, rel = np.asarray(corr, float), np.asarray(rel, float)
    n = len(corr)
    return [
        (f"GRPO corr >= 0.95 on every one of {n} seeds", np.min(corr), bool(np.all(corr >= 0.95))),
        (f"GRPO corr >= 0.95, mean over {n} seeds", np.mean(corr), bool(np.mean(corr) >= 0.95)),
        (
            f"GRPO median rel error <= 0.2 on every one of {n} seeds",
            np.max(rel),
            bool(np.all(rel <= 0.2)),
        ),
    ]


def _seeds(config: Config, run_dir: Path, first: dict) -> tuple[list[dict], list]:
    """The GRPO run again for each of ``config.grpo_seeds`` (in ``grpo_seed<s>/``): a table of
    each seed's agreement and final reward with the mean and 95% bootstrap interval over all
    seeds, a table of each seed's worst step, small-step and second-order agreement
    (``RESIDUAL_COLUMNS``),
    and the targets judged on every seed and on the mean."""
    grpo_rows = {k.removeprefix("grpo_"): v for k, v in first.items() if k.startswith("grpo_")}
    rows_of = {config.grpo.seed: grpo_rows}
    for seed in config.grpo_seeds:
        sub = dataclasses.replace(config.grpo, seed=seed, name=f"{config.grpo.name}_seed{seed}")
        directory = run_dir / f"grpo_seed{seed}"
        result = grpo_experiment.run(sub, directory, report=False)
        rows_of[seed] = dynamics_table(metrics_table(directory))
        rows_of[seed]["final_reward"] = result.get("final_reward")
    columns = [*SEED_COLUMNS, "final_reward"]
    per_seed = {seed: {c: rows.get(c) for c in columns} for seed, rows in rows_of.items()}
    rows = [[seed, *(values[c] for c in columns)] for seed, values in per_seed.items()]
    intervals = [bootstrap_interval([v[c] for v in per_seed.values()]) for c in columns]
    rows.append(["mean", *(m for m, _, _ in intervals)])
    rows.append(["95% interval", *(f"{lo:.3f}-{hi:.3f}" for _, lo, hi in intervals)])
    checks = seed_targets(
        [v["dH/predicted/corr"] for v in per_seed.values()],
        [v["dH/predicted/median_rel_error"] for v in per_seed.values()],
    )
    n = len(per_seed)
    title = f"GRPO predicted vs measured dH over {n} seeds"
    residuals = [[seed, *(r.get(c) for c in RESIDUAL_COLUMNS)] for seed, r in rows_of.items()]
    tables = [
        results_table("seeds", title, ["seed", *columns], rows),
        results_table(
            "residuals",
            "GRPO: the step with the largest squared residual (measured - predicted dH), the"
            " agreement on the steps whose dlogp/max is at most 1 nat, and the agreement of"
            " the second-order prediction (where logged)",
            ["seed", *RESIDUAL_COLUMNS],
            residuals,
        ),
    ]
    return tables, checks
