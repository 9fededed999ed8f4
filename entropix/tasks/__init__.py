"""Tasks: verifiable-reward problems (addition, countdown, sorting), corrupted-digits streams
for test-time adaptation, and a tiny generated text corpus, all with a character tokenizer."""

from entropix.tasks.arithmetic import (
    TASKS,
    Addition,
    Countdown,
    Problem,
    Sorting,
    make_task,
    reward,
    rewards,
)
from entropix.tasks.digits import CORRUPTIONS, SEVERITY, corrupt, load_digits_split, stream
from entropix.tasks.text import corpus, lm_windows, sentence
from entropix.tasks.tokenizer import BOS, EOS, PAD, CharTokenizer, pad_batch

__all__ = [
    "BOS",
    "CORRUPTIONS",
    "EOS",
    "PAD",
    "SEVERITY",
    "TASKS",
    "Addition",
    "CharTokenizer",
    "Countdown",
    "Problem",
    "Sorting",
    "corpus",
    "corrupt",
    "lm_windows",
    "load_digits_split",
    "make_task",
    "pad_batch",
    "reward",
    "rewards",
    "sentence",
    "stream",
]
