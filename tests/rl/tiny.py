"""A tiny RL setup shared by the RL-trainer tests: a 1-layer decoder, 3 new tokens, no SFT."""

from entropix import config as cfg
from entropix.rl import RLConfig
from entropix.tasks import Addition
from entropix.tasks.math_answers import Score
from entropix.tasks.tokenizer import ALPHABET

BASE = {
    "model": {"dim": 16, "layers": 1, "heads": 2, "kv_heads": 1, "ffn_dim": 32, "init_std": 0.5},
    "sft": {"steps": 0},
    # temperature 0.5: the policy's entropy is below the entropy filters of some methods (GTPO)
    "rollout": {
        "prompts": 2,
        "group_size": 4,
        "max_new_tokens": 3,
        "temperature": 0.5,
        "require_eos": False,
    },
    # eps 1e-3: Adam's first steps divide each gradient by its own size, so rounding in a
    # ~1e-9 gradient (another summation order on another mesh) would move a weight by ~lr
    "optim": {"lr": 1e-2, "eps": 1e-3},
    "train": {
        "steps": 2,
        "eval_every": 0,
        "eval_prompts": 0,
        "checkpoint_every": 100,
        "tensorboard": False,
    },
    "dynamics": {"every": 0},
    "update": {"vocab_chunk": 16},
}


def config(*overrides: str, **sections) -> RLConfig:
    """``RLConfig`` of BASE with ``sections`` merged in and dotted ``overrides`` on top."""
    data = {key: dict(value) for key, value in BASE.items()}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg.from_data(RLConfig, data, overrides, source="tiny")


class EvenSum(Addition):
    """Addition prompts; reward 1 when the places of the reply's characters in the tokenizer's
    alphabet sum to an even number. Any change of one character flips it, so a random policy
    earns it about half of the time and groups have reward variance from the first step."""

    def score(self, problem, response: str) -> Score:
        hit = sum(ALPHABET.index(ch) for ch in response) % 2 == 0
        return Score(float(hit), hit, True)

    def answer(self, problem, response: str) -> str:
        """Every reply is an answer (the label-free majority vote has votes from step 1)."""
        return response
