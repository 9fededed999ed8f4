"""entropix: a JAX research framework for entropy dynamics in training.

Layers (each imports only from the ones above it, see ``DESIGN.md``):
``entropy`` (measures) -> ``dynamics`` -> ``losses`` -> ``optim`` -> ``models`` ->
``rollout`` -> ``tasks`` -> ``train`` -> ``rl``. Sub-packages are imported lazily, so
``import entropix as ex; ex.entropy.shannon_entropy(...)`` works without paying for
the packages you do not use.
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = (
    "entropy",
    "dynamics",
    "losses",
    "optim",
    "models",
    "rollout",
    "tasks",
    "train",
    "rl",
    "config",
)
__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"entropix.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'entropix' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBPACKAGES))
