"""A synthetic run directory for the reporting commands: metrics.jsonl written by MetricsLogger,
nothing trained."""

import io

import numpy as np
import pytest

from entropix.train import MetricsLogger

QUADRANTS = ("pos_high", "pos_low", "neg_high", "neg_low", "zero")


def write_run(run_dir, steps: int = 24, dynamics: bool = True, telemetry: bool = True, seed=0):
    """Every step: entropy, reward, response_length; every 2nd step (when asked) the dH metrics
    (groups summing to dH/predicted) and the entropy telemetry with 4 position bins."""
    rng = np.random.default_rng(seed)
    logger = MetricsLogger(run_dir, tensorboard=False, stream=io.StringIO())
    for step in range(1, steps + 1):
        h = 1.5 - step / steps + rng.normal(0, 0.02)
        row = {"entropy": h, "reward": -0.3 * np.exp(h) + 1.1 + rng.normal(0, 0.01)}
        row["response_length"] = 10.0
        if dynamics and step % 2 == 0:
            parts = rng.normal(0, 1e-3, len(QUADRANTS)) * [3, 1, 1, 2, 0.1]
            predicted = parts.sum()
            row |= {f"dH/pred/{g}": v for g, v in zip(QUADRANTS, parts, strict=True)}
            row |= {"dH/pred/forking": 0.7 * predicted, "dH/pred/non_forking": 0.3 * predicted}
            row |= {"dH/predicted": predicted, "dH/measured": predicted + rng.normal(0, 1e-4)}
            row |= {"dH/logit_law": 0.9 * predicted, "dH/sampled_cov": rng.normal(0, 1e-3)}
        if telemetry and step % 2 == 0:
            profile = h * np.array([1.2, 1.0, 0.8, np.nan if step == 2 else 0.6])
            row |= {f"entropy/position/{i}": v for i, v in enumerate(profile)}
            row |= {"entropy/p50": h, "entropy/forking_fraction": 0.2}
            row |= {"dlogp/max": 0.1 + step / steps}
        logger.log(step, row)
    logger.close()
    return run_dir


@pytest.fixture
def synthetic_run(tmp_path):
    return write_run(tmp_path / "run")
