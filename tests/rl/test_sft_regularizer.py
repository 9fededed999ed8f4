"""``sft.regularizer``: CurioSFT ends the supervised warm-up with more entropy than plain
cross-entropy does, on the tiny decoder; a bad regularizer is refused at build time."""

import pytest

from entropix import rl
from entropix.train import read_metrics
from tests.rl import tiny

SFT = {"steps": 30, "batch_size": 16, "lr": 1e-2}


def final_sft_entropy(directory, **sft) -> dict:
    config = tiny.config(sft={**SFT, **sft}, rollout={"max_new_tokens": 4})
    plan = rl.build(config, task=tiny.EvenSum(seed=0))
    rl.warm_start(directory, config.sft, plan.task, plan.policy, plan.mesh, seed=0)
    return read_metrics(directory)[-1]


def test_curio_sft_ends_the_warm_up_with_more_entropy_than_plain_sft(tmp_path):
    plain = final_sft_entropy(tmp_path / "plain")
    curious = final_sft_entropy(
        tmp_path / "curio", regularizer={"name": "curio_sft", "quantile": 0.5}
    )
    assert "curio_sft/kl" in curious and "curio_sft/loss" not in plain
    assert curious["entropy"] > plain["entropy"] + 0.05, (plain["entropy"], curious["entropy"])
    # it still learns the answers: the cross-entropy falls well below its start
    start = read_metrics(tmp_path / "curio")[0]["sft/cross_entropy"]
    assert curious["sft/cross_entropy"] < start / 2


def test_a_regularizer_that_is_not_a_term_is_refused():
    config = tiny.config(sft={**SFT, "regularizer": {"name": "grpo"}})
    with pytest.raises(ValueError, match="'grpo' is an advantage method, not a loss term"):
        rl.build(config, task=tiny.EvenSum(seed=0))
