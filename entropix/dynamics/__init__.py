"""Entropy dynamics (layer 2): first-order predicted entropy change under policy gradient, the
entropy-performance law R = -a exp(H) + b, stage detection and the collapse step."""

from entropix.dynamics.entropy_change import (
    batch_predicted_entropy_change,
    pg_logit_update,
    predicted_entropy_change,
    predicted_entropy_change_pg,
    softmax_covariance,
    token_covariance,
)
from entropix.dynamics.laws import (
    CeilingInterval,
    EntropyPerformanceFit,
    ceiling_interval,
    collapse_step,
    detect_stages,
    fit_entropy_performance,
    live_ceiling,
    local_slope,
    plateau_start,
)
from entropix.dynamics.telemetry import (
    FORKING,
    QUADRANTS,
    dynamics_metrics,
    position_means,
    token_groups,
)

__all__ = [
    "FORKING",
    "QUADRANTS",
    "dynamics_metrics",
    "position_means",
    "token_groups",
    "CeilingInterval",
    "EntropyPerformanceFit",
    "batch_predicted_entropy_change",
    "ceiling_interval",
    "collapse_step",
    "detect_stages",
    "fit_entropy_performance",
    "live_ceiling",
    "local_slope",
    "pg_logit_update",
    "plateau_start",
    "predicted_entropy_change",
    "predicted_entropy_change_pg",
    "softmax_covariance",
    "token_covariance",
]
