"""Final-answer extraction for math problems and an equivalence reward checked by ``math-verify``.

Extraction (what the answer *is*):

- GSM8K style: the text after the last ``#### `` marker ("Training Verifiers to Solve Math Word
  Problems", Cobbe et al. 2021, whose reference solutions end in ``#### 42``).
- MATH style: the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with nested braces,
  or the token after ``\\boxed `` ("Measuring Mathematical Problem Solving With the MATH
  Dataset", Hendrycks et al. 2021, ``last_boxed_only_string`` + ``remove_boxed``).

Reward (whether it is *right*):

    reward = 1[math_equal(gold, extracted response answer)]   (0 if nothing could be extracted)

``math_equal`` is exact string match after light normalisation, else symbolic / numeric
equivalence by Hugging Face's ``math-verify`` (``parse`` both sides to SymPy, ``verify(gold,
pred)``): ``0.5 == 1/2 == \\frac{1}{2}``, ``1,000 == 1000``, ``(x+1)^2 == x^2+2x+1``; numbers
are compared after rounding to 6 decimals, so ``\\pi == 3.14159265``. An assignment answer
``x=3`` equals the gold ``3`` (math-verify compares its right-hand side) and a gold ``x=3``
accepts ``3``. This is the rule-based accuracy reward of RLVR (DeepSeek-R1, DAPO) with the
verifier that the Open-R1 recipes use.

Threads: ``math-verify`` bounds its parsing and comparison time with ``signal.alarm``, which
raises outside the main thread. :func:`math_equal` passes the timeout only in the main thread
and ``None`` (no signal) elsewhere, and catches every error and timeout as "not equal", so a
reward computed in any thread never raises. Without the alarm a pathological answer could run
long, so answers longer than ``MAX_ANSWER_CHARS`` skip symbolic checking (exact match only).
"""

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from entropix.validation import check_choice

ANSWER_FORMATS = ("auto", "gsm8k", "boxed", "plain")
VERIFIERS = ("math", "exact")
MAX_ANSWER_CHARS = 512

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_GSM8K_MARK = re.compile(r"####[ \t]*([^\n]*)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


@dataclass(frozen=True, slots=True)
class Score:
    """The verdict on one response: the reward (for math answers ``1.0 if correct else 0.0``),
    whether it is correct, and ``parsed``: whether an answer could be extracted / the response
    is well formed (an unparsed math response is never correct)."""

    reward: float
    correct: bool
    parsed: bool


def _braced(text: str, start: int) -> str | None:
    """The content of the brace group opening at ``text[start] == "{"`` (None if unclosed)."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # an escaped character (\{ \} \\) never opens or closes a group
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, or None.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``); the brace-less
    form ``\\boxed 5`` gives the next token (up to white space or ``$``, a trailing ``.`` or
    ``,`` dropped). An unclosed last box (a truncated response) or an empty one gives None.
    Reference: ``last_boxed_only_string`` / ``remove_boxed`` of the MATH dataset code
    (Hendrycks et al. 2021).

    Args:
        text: a response or a gold solution (LaTeX).

    Returns:
        The last box's content, stripped, or None.
    """
    matches = list(_BOX_COMMAND.finditer(text))
    if not matches:
        return None
    end = matches[-1].end()
    rest = text[end:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        content = _braced(text, end + len(rest) - len(stripped))
    elif rest[:1].isspace():
        token = re.match(r"[^\s$]+", stripped)
        content = token.group(0).rstrip(".,") if token else None
    else:
        content = None
    if content is None or not content.strip():
        return None
    return content.strip()


def extract_gsm8k(text: str) -> str | None:
    """The answer after the last ``#### `` marker (to the end of its line), or None.

    GSM8K reference solutions end in ``#### 42`` (Cobbe et al. 2021); the answer is normalised
    by :func:`normalize_answer` (``#### 1,000.`` -> ``1000``).

    Args:
        text: a response or a gold solution.

    Returns:
        The normalised answer, or None when there is no marker or nothing after it.
    """
    matches = _GSM8K_MARK.findall(text)
    if not matches:
        return None
    answer = normalize_answer(matches[-1])
    return answer or None


def normalize_answer(answer: str) -> str:
    """Light normalisation for exact match: strip white space, enclosing ``$``, a trailing
    period, and thousands separators between digits (``$1,000.$`` -> ``1000``).

    Args:
        answer: an extracted answer.

    Returns:
        The normalised answer (possibly empty).
    """
    answer = answer.strip()
    while len(answer) >= 2 and answer[0] == "$" and answer[-1] == "$":
        answer = answer[1:-1].strip()
    answer = answer.rstrip(".").strip()
    return _THOUSANDS.sub("", answer)


def extract_answer(
    text: str, answer_format: str = "auto", *, plain_fallback: bool = False
) -> str | None:
    """The final answer in ``text`` by ``answer_format``, or None when there is none.

    ``"boxed"``: :func:`extract_boxed`; ``"gsm8k"``: :func:`extract_gsm8k`; ``"plain"``: the
    whole text, normalised; ``"auto"``: boxed if the text has a box command, else ``####`` if it
    has the marker, else the whole text when ``plain_fallback`` (used for gold answers), else
    None (used for model responses: a response without a marked answer is unparsed).

    Args:
        text: a response or a gold answer field.
        answer_format: one of :data:`ANSWER_FORMATS`.
        plain_fallback: with ``"auto"``, fall back to the whole text (normalised).

    Returns:
        The answer, or None when there is none.

    Raises:
        ValueError: an unknown ``answer_format``.
    """
    check_choice(answer_format, "answer_format", ANSWER_FORMATS)
    if answer_format == "boxed":
        return extract_boxed(text)
    if answer_format == "gsm8k":
        return extract_gsm8k(text)
    if answer_format == "plain":
        return normalize_answer(text) or None
    if _BOX_COMMAND.search(text):
        return extract_boxed(text)
    if "####" in text:
        return extract_gsm8k(text)
    return (normalize_answer(text) or None) if plain_fallback else None


def _timeout_here(timeout_seconds: int | None) -> int | None:
    """The timeout math-verify may use in this thread: signal alarms exist only in the main
    thread and take whole seconds (a float would make math-verify fail every parse silently)."""
    if timeout_seconds is None or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, math.ceil(timeout_seconds))


@lru_cache(maxsize=4096)
def _parse(answer: str, timeout: int | None):
    """``math_verify.parse`` of an answer read as the content of a ``\\boxed{}``."""
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", parsing_timeout=timeout)


def math_equal(gold: str, pred: str, *, timeout_seconds: int | None = 5) -> bool:
    """Whether ``pred`` is mathematically equivalent to ``gold`` (never raises).

    ``normalize_answer(gold) == normalize_answer(pred)``, else ``math_verify.verify(parse(gold),
    parse(pred))`` (symbolic simplification and numeric comparison at 6 decimals), with each
    side read as a boxed LaTeX answer. ``timeout_seconds`` bounds each parse / comparison in the
    main thread; in other threads no timeout is set (signals need the main thread) and answers
    over ``MAX_ANSWER_CHARS`` characters are compared by string only. Any error or timeout
    inside math-verify counts as "not equal". Reference: Hugging Face ``math-verify``.

    Args:
        gold: the gold answer (extracted).
        pred: the response's answer (extracted).
        timeout_seconds: math-verify's bound per parse / comparison in the main thread, in
            whole seconds (rounded up, at least 1); None (and any thread but the main one):
            no bound.

    Returns:
        True when equivalent; False when not, when either side is empty, or on any error.

    Raises:
        ImportError: math-verify is not installed (only reached past the string match).
    """
    gold_n, pred_n = normalize_answer(gold), normalize_answer(pred)
    if not gold_n or not pred_n:
        return False
    if gold_n == pred_n:
        return True
    if max(len(gold_n), len(pred_n)) > MAX_ANSWER_CHARS:
        return False
    timeout = _timeout_here(timeout_seconds)
    try:
        from math_verify import verify
        from math_verify.errors import TimeoutException
    except ImportError as e:  # a declared dependency; say how to get it, do not crash silently
        raise ImportError("math_equal needs math-verify: pip install math-verify") from e
    try:
        gold_parsed, pred_parsed = _parse(gold_n, timeout), _parse(pred_n, timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except (Exception, TimeoutException):
        return False


def exact_equal(gold: str, pred: str) -> bool:
    """Exact match after :func:`normalize_answer` (the verifier of the exact-match tasks).

    Args:
        gold: the gold answer.
        pred: the response's answer.

    Returns:
        True when both normalise to the same non-empty string.
    """
    gold_n = normalize_answer(gold)
    return bool(gold_n) and gold_n == normalize_answer(pred)


def equality(
    verifier: str = "math", *, timeout_seconds: int | None = 5
) -> Callable[[str, str], bool]:
    """The answer comparison ``(gold, pred) -> bool`` named by ``verifier`` ("math"|"exact").

    Args:
        verifier: ``"math"`` (:func:`math_equal`) or ``"exact"`` (:func:`exact_equal`).
        timeout_seconds: passed to :func:`math_equal` (see there).

    Returns:
        The comparison function.

    Raises:
        ValueError: an unknown ``verifier``.
    """
    check_choice(verifier, "verifier", VERIFIERS)
    if verifier == "exact":
        return exact_equal
    return lambda gold, pred: math_equal(gold, pred, timeout_seconds=timeout_seconds)


def score_response(
    gold: str,
    response: str,
    *,
    response_format: str = "auto",
    verifier: str = "math",
    timeout_seconds: int | None = 5,
) -> Score:
    """Score a model response against a gold answer: ``reward = 1[equal(gold, extract(resp))]``.

    An unparsable response (no answer of ``response_format`` in it) scores
    ``Score(0.0, False, False)``; nothing here raises on model output.

    Args:
        gold: the gold answer (already extracted).
        response: the decoded model response.
        response_format: how to read the response (:func:`extract_answer`, no plain
            fallback).
        verifier: ``"math"`` or ``"exact"`` (:func:`equality`).
        timeout_seconds: math-verify's bound (see :func:`math_equal`).

    Returns:
        ``Score(reward, correct, parsed)`` with reward 1.0 or 0.0.
    """
    pred = extract_answer(response, response_format)
    if pred is None:
        return Score(0.0, False, False)
    correct = equality(verifier, timeout_seconds=timeout_seconds)(gold, pred)
    return Score(float(correct), bool(correct), True)


def score_metrics(scores: Iterable[Score], prefix: str = "reward/") -> dict[str, float]:
    """Batch metrics of scores: ``mean`` reward, ``accuracy``, ``unparsed`` (the count of
    responses with no extractable answer) and ``unparsed_frac`` (that count / batch size).

    Args:
        scores: the batch's scores.
        prefix: prepended to every metric name.

    Returns:
        ``{prefix + "mean", prefix + "accuracy", prefix + "unparsed", prefix +
        "unparsed_frac"}`` as floats (0 for an empty batch).
    """
    scores = list(scores)
    total = max(len(scores), 1)
    unparsed = sum(not s.parsed for s in scores)
    return {
        f"{prefix}mean": sum(s.reward for s in scores) / total,
        f"{prefix}accuracy": sum(s.correct for s in scores) / total,
        f"{prefix}unparsed": float(unparsed),
        f"{prefix}unparsed_frac": unparsed / total,
    }


def cluster_answers(
    answers: Sequence[str | None], equal: Callable[[str, str], bool] = exact_equal
) -> list[int | None]:
    """Group equivalent answers for majority voting: the cluster id of each answer (None stays
    None). Greedy: an answer joins the first cluster whose first member ``equal``s it.

    Args:
        answers: the extracted answers (None: unparsed).
        equal: the answer comparison (e.g. from :func:`equality`); normalised string match
            is tried first.

    Returns:
        One cluster id (0, 1, ... in order of first appearance) or None per answer.
    """
    reps: list[str] = []
    ids: list[int | None] = []
    for answer in answers:
        if answer is None:
            ids.append(None)
            continue
        for j, rep in enumerate(reps):
            if normalize_answer(rep) == normalize_answer(answer) or equal(rep, answer):
                ids.append(j)
                break
        else:
            reps.append(answer)
            ids.append(len(reps) - 1)
    return ids
