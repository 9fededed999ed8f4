"""The controller registry: configs name controllers by key (``controllers: [{name: ...}]``).

Each entry is a controller class (a frozen dataclass following :class:`Controller`) and the
control values it supplies with its default settings, so a trainer can tell a user which
controller to add when a loss term reads a control nobody sets.
"""

from dataclasses import dataclass
from typing import Any

from entropix.optim.aepo import AEPOTemperature
from entropix.optim.anchor import EntropyAnchor
from entropix.optim.controller import Controller
from entropix.optim.entropy_coef import AdaptiveEntropyCoef
from entropix.optim.epo import EntropyHistory
from entropix.validation import lookup


@dataclass(frozen=True)
class ControllerInfo:
    """One registry entry: the config key, the class and the controls it supplies."""

    name: str
    cls: type
    supplies: tuple[str, ...]


CONTROLLERS: dict[str, ControllerInfo] = {
    info.name: info
    for info in (
        ControllerInfo("adaptive_entropy_coef", AdaptiveEntropyCoef, ("entropy_coef",)),
        ControllerInfo(
            "entropy_history", EntropyHistory, ("entropy_hist_mean", "entropy_hist_count")
        ),
        ControllerInfo("aepo_temperature", AEPOTemperature, ("aepo_temperature",)),
        ControllerInfo("entropy_anchor", EntropyAnchor, ("entropy_anchor",)),
    )
}


def get_controller(name: str) -> ControllerInfo:
    """Look up a controller by key; unknown keys raise ``KeyError`` naming the closest keys.

    Args:
        name: a key of :data:`CONTROLLERS`.

    Returns:
        The :class:`ControllerInfo` entry.
    """
    return lookup(CONTROLLERS, name, "controller")


def build_controller(name: str, **args: Any) -> Controller:
    """The controller ``name`` with its settings (dataclass fields) ``args``.

    Args:
        name: a key of :data:`CONTROLLERS`.
        **args: the controller's settings by field name; unset fields keep their defaults.

    Returns:
        The controller instance.
    """
    return get_controller(name).cls(**args)


def supplier_of(control: str) -> str | None:
    """The registry key of a controller that supplies ``control`` by default, if any.

    Args:
        control: a control name a loss reads (e.g. ``"entropy_coef"``).

    Returns:
        The key of the first registered controller that supplies it, or None.
    """
    for info in CONTROLLERS.values():
        if control in info.supplies:
            return info.name
    return None
