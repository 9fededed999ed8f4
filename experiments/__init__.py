"""Experiment families: each module has ``Config`` (the typed schema its YAML fills) and
``run(config, run_dir) -> dict`` (writes metrics/plots/tables under ``run_dir``, returns a
summary). ``entropix run CONFIG.yaml`` picks the module named by the config's ``experiment``.
"""

import importlib
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

from entropix import config as cfg
from entropix.validation import lookup

__all__ = ["EXPERIMENTS", "module", "prepare", "run", "schemas"]

# experiment name -> module under experiments/
EXPERIMENTS: dict[str, str] = {
    "grpo": "grpo",
    "interventions": "interventions",
    "dynamics": "dynamics",
    "attention_collapse": "attention_collapse",
    "tta": "tta",
    "ttrl": "ttrl",
}


def module(name: str) -> types.ModuleType:
    """Import the experiment module for ``name`` (a KeyError names the nearest one).

    Args:
        name: an experiment name, a key of :data:`EXPERIMENTS`.

    Returns:
        The module ``experiments.<name>`` (it has ``Config`` and ``run``).

    Raises:
        KeyError: ``name`` is not an experiment (the message names the nearest one).
    """
    return importlib.import_module(f"experiments.{lookup(EXPERIMENTS, name, 'experiment')}")


class _Schemas(Mapping):
    """Experiment name -> its ``Config`` dataclass, importing a module only when asked."""

    def __getitem__(self, name: str) -> type:
        return module(name).Config

    def __iter__(self):
        return iter(EXPERIMENTS)

    def __len__(self) -> int:
        return len(EXPERIMENTS)


def schemas() -> Mapping[str, type]:
    """Experiment name -> its ``Config`` dataclass (modules are imported lazily).

    Returns:
        A read-only mapping over :data:`EXPERIMENTS`; looking a name up imports its module.
    """
    return _Schemas()


def prepare(
    config_path: str | Path, overrides: Sequence[str] = (), run_dir: str | Path | None = None
) -> tuple[types.ModuleType, cfg.ExperimentConfig, Path]:
    """Resolve an experiment config and its run directory and save ``config.yaml`` there.

    Args:
        config_path: the experiment YAML.
        overrides: ``dotted.key=value`` strings applied on top.
        run_dir: the run directory (default: the config's ``run_dir``, else ``runs/<name>``).

    Returns:
        ``(module, config, directory)``: the experiment module, the typed config (its
        ``Config``) and the run directory. Re-using a directory whose saved config differs
        prints the changed keys.
    """
    overrides = list(overrides) + ([f"run_dir={run_dir}"] if run_dir else [])
    config = cfg.load(config_path, overrides, schemas())
    directory = cfg.resolve_run_dir(config)
    previous = directory / cfg.CONFIG_FILENAME
    if previous.is_file():
        changed = cfg.diff(cfg.read_yaml(previous), cfg.to_dict(config))
        if changed:
            print(
                f"note: resuming {directory} with changed keys: {', '.join(changed)}",
                file=sys.stderr,
            )
    cfg.save(config, directory)
    return module(config.experiment), config, directory


def run(
    config_path: str | Path, overrides: Sequence[str] = (), run_dir: str | Path | None = None
) -> tuple[Path, dict]:
    """:func:`prepare` the experiment and run it. A run refused before it wrote anything (its
    checks raise while the directory holds only the ``config.yaml`` just saved) leaves no
    trace: that file goes again, and the directory when it is then empty, so fixing the config
    and rerunning starts fresh instead of "resuming" a run that never began.

    Args:
        config_path: the experiment YAML.
        overrides: ``dotted.key=value`` strings applied on top.
        run_dir: the run directory (default: the config's ``run_dir``, else ``runs/<name>``).

    Returns:
        ``(directory, summary)``: the run directory and the experiment's summary dict.
    """
    experiment, config, directory = prepare(config_path, overrides, run_dir)
    try:
        return directory, experiment.run(config, directory)
    except Exception:
        if [p.name for p in directory.iterdir()] == [cfg.CONFIG_FILENAME]:
            (directory / cfg.CONFIG_FILENAME).unlink()
            directory.rmdir()
        raise
