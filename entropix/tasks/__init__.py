"""Tasks (layer 7): prompt sources with verifiable rewards -- generated problems (addition,
countdown, sorting) and RLVR datasets from local JSONL / Parquet with a math-verify reward --
their codecs (prompt / answer encoding, sequence layout), pass@k / maj@k evaluation,
corrupted-digits streams for test-time adaptation, and a tiny generated text corpus.

A prompt source, as the RL trainer reads it: ``train_problems(step, n)``, ``eval_problems(n)``
(pure functions of the seed and the step, so a resumed run sees the same problems),
``question(problem)`` (the prompt text for chat models), ``score(problem, response) -> Score``
and ``evaluate(problems, responses, ks)`` (pass@k / maj@k); generated tasks also give
``sft_problems(step, n)`` (warm-up problems with canonical answers) and ``max_answer_len()``.
"""

from entropix.tasks.arithmetic import (
    TASKS,
    Addition,
    Countdown,
    GeneratedTask,
    Problem,
    Sorting,
    make_task,
    reward,
    rewards,
)
from entropix.tasks.codecs import (
    CharCodec,
    ChatCodec,
    Layout,
    encode_answers,
    encode_prompts,
    layout_for,
)
from entropix.tasks.datasets import MathDataset, load_records
from entropix.tasks.digits import (
    CORRUPTIONS,
    ORDERS,
    SEVERITY,
    corrupt,
    corrupted_stream,
    load_digits_split,
)
from entropix.tasks.evaluation import evaluate_samples, maj_at_k, pass_at_k
from entropix.tasks.math_answers import (
    Score,
    extract_answer,
    extract_boxed,
    extract_gsm8k,
    math_equal,
    score_metrics,
    score_response,
)
from entropix.tasks.text import corpus, lm_windows, sentence
from entropix.tasks.tokenizer import BOS, EOS, PAD, CharTokenizer, pad_batch

__all__ = [
    "BOS",
    "CORRUPTIONS",
    "ORDERS",
    "EOS",
    "PAD",
    "SEVERITY",
    "TASKS",
    "Addition",
    "CharCodec",
    "CharTokenizer",
    "ChatCodec",
    "Countdown",
    "GeneratedTask",
    "Layout",
    "Problem",
    "Sorting",
    "corpus",
    "corrupt",
    "corrupted_stream",
    "encode_answers",
    "encode_prompts",
    "layout_for",
    "lm_windows",
    "load_digits_split",
    "make_task",
    "pad_batch",
    "reward",
    "rewards",
    "sentence",
    "MathDataset",
    "Score",
    "evaluate_samples",
    "extract_answer",
    "extract_boxed",
    "extract_gsm8k",
    "load_records",
    "maj_at_k",
    "math_equal",
    "pass_at_k",
    "score_metrics",
    "score_response",
]
