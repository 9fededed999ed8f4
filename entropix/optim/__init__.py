"""Optimisation (layer 4): optax transforms and metric-driven controllers for entropy control.

Optax ``GradientTransformationExtraArgs`` (compose with ``optax.chain``):
:func:`sam`, :func:`sar_optimizer` (need ``value_and_grad_fn``), :func:`safe_step` (needs
``logits_fn``); the train step in ``entropix.train`` passes both extra arguments.

Controllers (:class:`Controller`: ``init``/``update``/``controls``, state kept in
``TrainState.controls``): :class:`AdaptiveEntropyCoef`, :class:`EntropyHistory` (EPO),
:class:`AEPOTemperature`, :class:`EntropyAnchor` (SIREN); configs name them by the keys of
:data:`CONTROLLERS`. See ``docs/training.md``.
"""

from entropix.optim.aepo import AEPOState, AEPOTemperature
from entropix.optim.anchor import AnchorState, EntropyAnchor
from entropix.optim.controller import Controller
from entropix.optim.entropy_coef import AdaptiveEntropyCoef, EntropyCoefState
from entropix.optim.epo import EntropyHistory, EntropyHistoryState
from entropix.optim.registry import (
    CONTROLLERS,
    ControllerInfo,
    build_controller,
    get_controller,
    supplier_of,
)
from entropix.optim.safe_step import SafeStepState, logit_spread, safe_step
from entropix.optim.sam import SAMState, SARState, sam, sar_optimizer

__all__ = [
    "CONTROLLERS",
    "AEPOState",
    "AEPOTemperature",
    "AdaptiveEntropyCoef",
    "AnchorState",
    "Controller",
    "ControllerInfo",
    "EntropyAnchor",
    "EntropyCoefState",
    "EntropyHistory",
    "EntropyHistoryState",
    "SAMState",
    "SARState",
    "SafeStepState",
    "build_controller",
    "get_controller",
    "logit_spread",
    "safe_step",
    "sam",
    "sar_optimizer",
    "supplier_of",
]
