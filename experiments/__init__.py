"""Experiment families: each module has ``Config`` (the typed schema its YAML fills) and
``run(config, run_dir) -> dict`` (writes metrics/plots/tables under ``run_dir``, returns a
summary). ``entropix run CONFIG.yaml`` picks the module named by the config's ``experiment``.
"""

import importlib
from collections.abc import Mapping

from entropix.validation import lookup

# experiment name -> module under experiments/
EXPERIMENTS: dict[str, str] = {
    "grpo": "grpo",
    "interventions": "interventions",
    "dynamics": "dynamics",
    "attention_collapse": "attention_collapse",
    "tta": "tta",
}


def module(name: str):
    """Import the experiment module for ``name`` (a KeyError names the nearest one)."""
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
    """Experiment name -> its ``Config`` dataclass (modules are imported lazily)."""
    return _Schemas()
