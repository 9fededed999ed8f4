"""Bad RL configs are refused on one line before anything is compiled or trained."""

from pathlib import Path

import pytest

from entropix.cli import main

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "grpo_addition_tiny.yaml")

CASES = {
    "group-relative shaper, one response": (
        ["rollout.group_size=1"],
        "need at least 2 responses per prompt",
    ),
    "batch does not split into micro-batches": (
        ["rollout.prompts=3", "rollout.group_size=2", "update.micro_batches=4"],
        "must split into update.mini_batches x micro_batches = 4 parts",
    ),
    "a control no controller supplies": (
        ["loss.terms.1.name=siren"],
        "reads controls['entropy_anchor'], which no configured controller supplies; "
        "add `controllers: [{name: entropy_anchor}]`",
    ),
    "a controller without its metric": (
        ["controllers.0.name=entropy_history", "controllers.0.metric=nope"],
        "controller 'entropy_history' observes metric 'nope', which the RL step does not report",
    ),
    "a selector given as a term": (
        ["loss.terms.1.name=forking_tokens"],
        "'forking_tokens' is a selector method, not a loss term (give it as loss.selector)",
    ),
    "a reshaping shaper first": (
        ["loss.advantage.0.name=gtpo"],
        "it reshapes advantages: list a shaper before it",
    ),
    "an unknown controller": (["controllers.0.name=entropy_histroy"], "did you mean"),
    "a learning rate out of range": (["optim.lr=0"], "optim.lr must be > 0; got 0"),
    "no RL steps": (["train.steps=0"], "train.steps must be >= 1; got 0"),
    "evaluation on no problems": (
        ["train.eval_prompts=0"],
        "train.eval_every=20 evaluates on train.eval_prompts=0 problems",
    ),
    "a zero dynamics row stride": (
        ["dynamics.row_stride=0"],
        "dynamics.row_stride must be >= 1 (1: every row); got 0",
    ),
    "a dynamics row stride that does not split the batch": (
        ["dynamics.row_stride=3"],
        "dynamics.row_stride=3: the 128 rows of a batch must split into row_stride x "
        "update.micro_batches = 3 equal parts",
    ),
    "a zero sampling temperature": (
        ["rollout.temperature=0"],
        "rollout.temperature must be > 0; got 0",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_one_line_before_any_training(case, tmp_path, capsys):
    overrides, message = CASES[case]
    run_dir = tmp_path / "run"
    status = main(["run", CONFIG, *overrides, "sft.steps=5", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("entropix run: error:"), err
    assert "\n" not in err and message in err, err
    assert not run_dir.exists()  # not even config.yaml: a fixed rerun starts fresh


def test_a_row_stride_is_not_checked_against_the_batch_when_nothing_is_probed():
    from entropix import config as cfg
    from entropix.rl import RLConfig
    from entropix.rl.trainer import _check_dynamics

    config = cfg.load(CONFIG, ["dynamics.every=0", "dynamics.row_stride=3"], {"grpo": RLConfig})
    _check_dynamics(config)  # every=0: the stride is never used
    with pytest.raises(ValueError, match="must split into"):
        _check_dynamics(cfg.load(CONFIG, ["dynamics.row_stride=3"], {"grpo": RLConfig}))
