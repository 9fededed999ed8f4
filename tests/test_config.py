import dataclasses
from typing import Literal

import pytest

from entropix import config as cfg
from entropix.config import ConfigError, ExperimentConfig, MethodSpec


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    steps: int = 10
    schedule: Literal["constant", "cosine"] = "constant"


@dataclasses.dataclass(frozen=True)
class Loss:
    aggregate: str = "token-mean"
    terms: tuple[MethodSpec, ...] = (MethodSpec("ppo_clip"),)


@dataclasses.dataclass(frozen=True)
class Schema(ExperimentConfig):
    optim: Optim = dataclasses.field(default_factory=Optim)
    loss: Loss = dataclasses.field(default_factory=Loss)
    widths: tuple[int, ...] = (4, 8)
    note: str | None = None
    flag: bool = False


SCHEMAS = {"demo": Schema}


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_defaults_and_dotted_overrides(tmp_path):
    path = _write(
        tmp_path,
        "experiment: demo\noptim:\n  lr: 3e-4\nloss:\n  terms:\n"
        "    - {name: ppo_clip, eps_high: 0.28}\n    - {name: ppo_clip, coef: 1}\n",
    )
    config = cfg.load(
        path,
        ["loss.terms.1.coef=0.003", "seed=3", "widths.0=16", "note=hi", "flag=true"],
        SCHEMAS,
    )
    assert isinstance(config, Schema)
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)  # 3e-4 read as float
    assert config.optim.steps == 10  # default kept
    assert config.seed == 3 and config.widths == (16, 8) and config.note == "hi" and config.flag
    assert config.loss.terms[0] == MethodSpec("ppo_clip", {"eps_high": 0.28})
    assert config.loss.terms[1].args == {"coef": 0.003}
    assert callable(config.loss.terms[1].build().fn)


def test_index_one_past_the_end_appends(tmp_path):
    path = _write(tmp_path, "experiment: demo\n")
    config = cfg.load(path, ["loss.terms.1.name=ppo_clip", "loss.terms.1.eps_low=0.1"], SCHEMAS)
    assert config.loss.terms[1] == MethodSpec("ppo_clip", {"eps_low": 0.1})


def test_int_is_accepted_for_float_and_none_for_optional(tmp_path):
    path = _write(tmp_path, "experiment: demo\noptim: {lr: 1}\n")
    config = cfg.load(path, ["note=null", "loss.terms.0.dual_clip=null"], SCHEMAS)
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.note is None and config.loss.terms[0].args["dual_clip"] is None


@pytest.mark.parametrize(
    ("text", "overrides", "pattern"),
    [
        (
            "experiment: demo\noptim: {lrr: 0.1}\n",
            [],
            r"unknown key 'optim.lrr'; did you mean 'lr'",
        ),
        (
            "experiment: demo\n",
            ["optim.setps=3"],
            r"unknown key 'optim.setps'; did you mean 'steps'",
        ),
        ("experiment: demo\n", ["optim.steps=1.5"], r"optim.steps must be int; got 1.5"),
        ("experiment: demo\n", ["flag=3"], r"flag must be bool"),
        ("experiment: demo\n", ["optim.schedule=cosin"], r"did you mean 'cosine'"),
        ("experiment: demo\n", ["loss.terms.5.coef=1"], r"loss.terms.5: index '5' is out of range"),
        ("experiment: demo\n", ["loss.terms.0.cof=1"], r"'loss.terms.0.cof'.*did you mean 'coef'"),
        ("experiment: demo\n", ["loss.terms.0.name=ppo_clp"], r"did you mean 'ppo_clip'"),
        ("experiment: demo\n", ["loss.terms.0.eps_low=high"], r"eps_low must be float"),
        ("experiment: dmeo\n", [], r"experiment='dmeo'.*did you mean 'demo'"),
        ("experiment: demo\n", ["seed"], r"must look like dotted.key=value"),
        ("[1, 2]\n", [], r"top level must be a mapping"),
    ],
)
def test_errors_are_one_line_and_name_the_key(tmp_path, text, overrides, pattern):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        cfg.load(path, overrides, SCHEMAS)
    assert "\n" not in str(info.value)
    if "top level" not in pattern and "look like" not in pattern:
        assert str(path) in str(info.value)


def test_missing_file_names_it_and_suggests_the_nearest(tmp_path):
    _write(tmp_path, "experiment: demo\n", "grpo_addition_tiny.yaml")
    with pytest.raises(
        FileNotFoundError,
        match=r"grpo_adition_tiny.yaml.*did you mean.*"
        r"grpo_addition_tiny.yaml",
    ):
        cfg.load(tmp_path / "grpo_adition_tiny.yaml", [], SCHEMAS)


def test_save_round_trips_and_diff(tmp_path):
    config = cfg.load(_write(tmp_path, "experiment: demo\nname: x\n"), ["optim.lr=0.5"], SCHEMAS)
    run_dir = cfg.resolve_run_dir(config, tmp_path / "runs")
    assert run_dir == tmp_path / "runs" / "x"
    saved = cfg.save(config, run_dir)
    again = cfg.load(saved, [], SCHEMAS)
    assert again == config
    assert cfg.diff(cfg.to_dict(config), cfg.to_dict(cfg.from_data(Schema, {}, ["seed=2"]))) == [
        "experiment",
        "name",
        "seed",
        "optim.lr",
    ]


def test_parse_scalar_reads_yaml_scalars():
    assert cfg.parse_scalar("3") == 3 and cfg.parse_scalar("1e-3") == 1e-3
    assert cfg.parse_scalar("true") is True and cfg.parse_scalar("null") is None
    assert cfg.parse_scalar("[1, 2]") == [1, 2] and cfg.parse_scalar("abc") == "abc"
