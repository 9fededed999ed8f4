"""Verifiable-reward tasks: digit addition, countdown and sorting.

Each task has a seeded problem generator ``sample(rng, n)``, a prompt formatter (the problem's
``prompt`` for character models, ``question(problem)`` in words for chat models), a canonical
answer for supervised warm-up, and a reward:

    reward = 1[response is correct] + format_coef * 1[response is well formed]

As prompt sources for a trainer (the interface the RLVR datasets of
``entropix.tasks.datasets`` share) every task draws its problems from three independent seeded
streams: ``train_problems(step, n)`` (RL), ``sft_problems(step, n)`` (supervised warm-up) and
``eval_problems(n)`` (held out), each a pure function of ``(seed, step)``; ``score(problem,
response)`` gives the reward, correctness and whether the response was well formed.

as in rule-based RL for reasoning (e.g. DeepSeek-R1's accuracy + format rewards). "Correct" is
exact match of the parsed answer for addition and sorting, and for countdown an expression that
uses each given number at most once and evaluates to the target.
"""

import ast
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from entropix.tasks.evaluation import evaluate_samples
from entropix.tasks.math_answers import Score
from entropix.validation import check_choice, check_positive

if TYPE_CHECKING:
    from entropix.tasks.datasets import MathDataset


@dataclass(frozen=True)
class Problem:
    """One task instance: the prompt text, a canonical answer and the data to verify with."""

    prompt: str
    answer: str
    numbers: tuple[int, ...]
    target: int | None = None


_INTEGER = re.compile(r"-?[0-9]+")
_DIGIT_LIST = re.compile(r"[0-9]+(,[0-9]+)*")
_EXPRESSION = re.compile(r"[0-9+\-*/() ]+")


_EVAL, _SFT, _TRAIN = 0, 1, 2  # independent problem streams of a generated task


class GeneratedTask:
    """A task whose problems come from a seeded generator (subclasses define ``sample``,
    ``question``, ``well_formed``, ``correct`` and ``max_answer_len``)."""

    name = ""

    def __init__(self, format_coef: float = 0.0, seed: int = 0):
        self.format_coef, self.seed = format_coef, seed

    def _stream(self, stream: int, step: int, n: int) -> list[Problem]:
        return self.sample(np.random.default_rng([self.seed, stream, step]), n)

    def train_problems(self, step: int, n: int) -> list[Problem]:
        """The ``n`` problems of RL step ``step`` (a pure function of seed and step).

        Args:
            step: the step index (>= 0); the same step always gives the same problems.
            n: how many problems (>= 1).

        Returns:
            ``n`` :class:`Problem` s.
        """
        return self._stream(_TRAIN, step, n)

    def sft_problems(self, step: int, n: int) -> list[Problem]:
        """The ``n`` problems of supervised warm-up step ``step``.

        Args:
            step: the step index (>= 0); the same step always gives the same problems.
            n: how many problems (>= 1).

        Returns:
            ``n`` :class:`Problem` s (their ``answer`` is the SFT target).
        """
        return self._stream(_SFT, step, n)

    def eval_problems(self, n: int) -> list[Problem]:
        """``n`` held-out problems (the same for every step).

        Args:
            n: how many problems (>= 1).

        Returns:
            ``n`` :class:`Problem` s.
        """
        return self._stream(_EVAL, 0, n)

    def answer(self, problem: Problem, response: str) -> str | None:
        """The response as an answer without reading the label (majority votes): the response
        itself when it is well formed, else None.

        Args:
            problem: the problem answered.
            response: the decoded reply (read up to EOS).

        Returns:
            The response text, or None when it is not well formed.
        """
        return response if self.well_formed(problem, response) else None

    def score(self, problem: Problem, response: str) -> Score:
        """reward = 1[correct] + format_coef * 1[well formed]; parsed = well formed.

        Args:
            problem: the problem answered.
            response: the decoded reply (read up to EOS).

        Returns:
            ``Score(reward, correct, parsed)``.
        """
        formed = self.well_formed(problem, response)
        correct = self.correct(problem, response)
        return Score(float(correct) + self.format_coef * float(formed), correct, formed)

    def evaluate(
        self,
        problems: Sequence[Problem],
        responses: Sequence[Sequence[str]],
        ks: Sequence[int] = (1,),
        prefix: str = "eval/",
    ) -> dict[str, float]:
        """pass@1, unbiased pass@k and maj@k over the n responses of each problem
        (``entropix.tasks.evaluation``); votes go to the well-formed replies' exact text.

        Args:
            problems: the P problems evaluated.
            responses: for each problem its n >= max(ks) decoded replies.
            ks: the k of pass@k / maj@k (1 is always included).
            prefix: prepended to every metric name.

        Returns:
            ``{prefix + "pass@k": float, prefix + "maj@k": float}`` for each k, means over
            the problems, in [0, 1].
        """
        correct, keys = [], []
        for problem, samples in zip(problems, responses, strict=True):
            scores = [self.score(problem, r) for r in samples]
            correct.append([s.correct for s in scores])
            keys.append([r if s.parsed else None for r, s in zip(samples, scores, strict=True)])
        return evaluate_samples(correct, keys, ks, prefix)


class Addition(GeneratedTask):
    """``a+b=`` -> ``a+b`` for ``digits``-digit operands (prompt ``"12+34="``, answer ``"46"``)."""

    name = "addition"

    def __init__(self, digits: int = 2, format_coef: float = 0.0, seed: int = 0):
        check_positive(digits, "digits")
        super().__init__(format_coef, seed)
        self.digits = digits

    def sample(self, rng: np.random.Generator, n: int) -> list[Problem]:
        """``n`` problems with operands drawn uniformly from [0, 10**digits).

        Args:
            rng: the generator the problems are drawn from (advanced in place).
            n: how many problems.

        Returns:
            ``n`` :class:`Problem` s with prompt, canonical answer and the operands
            ``(a, b)`` as ``numbers``.
        """
        a = rng.integers(0, 10**self.digits, size=n)
        b = rng.integers(0, 10**self.digits, size=n)
        return [
            Problem(f"{x}+{y}=", str(x + y), (int(x), int(y))) for x, y in zip(a, b, strict=True)
        ]

    def question(self, problem: Problem) -> str:
        """The problem in words, for chat models.

        Args:
            problem: a problem of this task.

        Returns:
            The question text.
        """
        a, b = problem.numbers
        return f"What is {a}+{b}? Answer with the number only."

    def well_formed(self, problem: Problem, response: str) -> bool:
        """Whether the response is an integer (an optional minus sign and digits).

        Args:
            problem: the problem answered.
            response: the decoded reply (read up to EOS).

        Returns:
            True when well formed.
        """
        return _INTEGER.fullmatch(response) is not None

    def correct(self, problem: Problem, response: str) -> bool:
        """Whether the response is exactly the sum's decimal text.

        Args:
            problem: the problem answered.
            response: the decoded reply (read up to EOS).

        Returns:
            True when correct.
        """
        return response == problem.answer

    def max_answer_len(self) -> int:
        """The longest canonical answer: ``digits + 1`` characters (the carry).

        Returns:
            The number of characters, without EOS.
        """
        return self.digits + 1


class Sorting(GeneratedTask):
    """``5,3,8>`` -> ``3,5,8``: sort ``length`` digits ascending."""

    name = "sorting"

    def __init__(self, length: int = 4, format_coef: float = 0.0, seed: int = 0):
        check_positive(length, "length")
        super().__init__(format_coef, seed)
        self.length = length

    def sample(self, rng: np.random.Generator, n: int) -> list[Problem]:
        """``n`` problems of ``length`` digits drawn uniformly from 0-9 (repeats allowed).

        Args:
            rng: the generator the problems are drawn from (advanced in place).
            n: how many problems.

        Returns:
            ``n`` :class:`Problem` s with prompt, canonical answer and the digits as ``numbers``.
        """
        problems = []
        for row in rng.integers(0, 10, size=(n, self.length)):
            values = tuple(int(v) for v in row)
            text = ",".join(map(str, values))
            problems.append(Problem(f"{text}>", ",".join(map(str, sorted(values))), values))
        return problems

    def question(self, problem: Problem) -> str:
        """The problem in words, for chat models.

        Args:
            problem: a problem of this task.

        Returns:
            The question text.
        """
        return (
            f"Sort the digits {problem.prompt[:-1]} in ascending order. "
            "Answer with the comma-separated digits only."
        )

    def well_formed(self, problem: Problem, response: str) -> bool:
        """Whether the response is a comma-separated list of numbers (no spaces).

        Args:
            problem: the problem answered.
            response: the decoded reply (read up to EOS).

        Returns:
            True when well formed.
        """
        return _DIGIT_LIST.fullmatch(response) is not None

    def correct(self, problem: Problem, response: str) -> bool:
        """Whether the response is exactly the sorted digits, comma-separated.

        Args:
            problem: the problem answered.
            response: the decoded reply (read up to EOS).

        Returns:
            True when correct.
        """
        return response == problem.answer

    def max_answer_len(self) -> int:
        """The canonical answer's length: ``2 * length - 1`` (digits and commas).

        Returns:
            The number of characters, without EOS.
        """
        return 2 * self.length - 1


def _evaluate(node) -> float:
    """Evaluate a parsed ``+ - * /`` integer expression (no names, calls or powers)."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if right == 0:
            raise ZeroDivisionError
        return left / right
    raise ValueError("not an arithmetic expression")


class Countdown(GeneratedTask):
    """``3,5,2=16:`` -> an expression over the numbers equal to the target, e.g. ``(3+5)*2``.

    The generator draws ``count`` numbers in [1, max_number] and a random expression tree over
    all of them with + - * (so the target is a positive integer with a known solution).
    """

    name = "countdown"

    def __init__(
        self, count: int = 3, max_number: int = 9, format_coef: float = 0.0, seed: int = 0
    ):
        check_positive(count, "count")
        check_positive(max_number, "max_number")
        super().__init__(format_coef, seed)
        self.count, self.max_number = count, max_number

    def sample(self, rng: np.random.Generator, n: int) -> list[Problem]:
        """``n`` problems: numbers and a random + - * expression over all of them whose value
        (the target) is positive; draws with a non-positive target are redrawn.

        Args:
            rng: the generator the problems are drawn from (advanced in place).
            n: how many problems.

        Returns:
            ``n`` :class:`Problem` s with prompt, canonical answer, the numbers as
            ``numbers`` and the value as ``target``.
        """
        problems = []
        while len(problems) < n:
            numbers = [int(v) for v in rng.integers(1, self.max_number + 1, size=self.count)]
            terms = [str(v) for v in numbers]
            order = rng.permutation(len(terms)).tolist()
            expr = terms[order[0]]
            for i in order[1:]:
                op = "+-*"[rng.integers(0, 3)]
                wrap = op == "*" and ("+" in expr or "-" in expr)
                expr = f"({expr}){op}{terms[i]}" if wrap else f"{expr}{op}{terms[i]}"
            target = _evaluate(ast.parse(expr, mode="eval"))
            if target > 0:
                listed = ",".join(map(str, numbers))
                problems.append(Problem(f"{listed}={target}:", expr, tuple(numbers), target))
        return problems

    def question(self, problem: Problem) -> str:
        """The problem in words, for chat models.

        Args:
            problem: a problem of this task.

        Returns:
            The question text.
        """
        numbers = ", ".join(map(str, problem.numbers))
        return (
            f"Using the numbers {numbers} at most once each and + - * / ( ), write an expression "
            f"equal to {problem.target}. Answer with the expression only."
        )

    def well_formed(self, problem: Problem, response: str) -> bool:
        """Whether the response is an integer + - * / expression with parentheses that
        evaluates (no division by zero).

        Args:
            problem: the problem answered.
            response: the decoded reply (read up to EOS).

        Returns:
            True when well formed.
        """
        if _EXPRESSION.fullmatch(response) is None:
            return False
        try:
            _evaluate(ast.parse(response, mode="eval"))
        except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
            return False
        return True

    def correct(self, problem: Problem, response: str) -> bool:
        """Whether the response is well formed, uses each given number at most once (and no
        other number) and evaluates to the target (within 1e-9).

        Args:
            problem: the problem answered.
            response: the decoded reply (read up to EOS).

        Returns:
            True when correct.
        """
        if not self.well_formed(problem, response):
            return False
        used = Counter(int(v) for v in re.findall(r"[0-9]+", response))
        if used - Counter(problem.numbers):
            return False
        return abs(_evaluate(ast.parse(response, mode="eval")) - problem.target) < 1e-9

    def max_answer_len(self) -> int:
        """An upper bound on the canonical expression's length: ``4 * count + 2``.

        Returns:
            The number of characters, without EOS.
        """
        return 4 * self.count + 2


TASKS = {"addition": Addition, "countdown": Countdown, "sorting": Sorting}


def make_task(name: str, **kwargs: int | float) -> GeneratedTask:
    """Build a task by name (``addition``, ``countdown``, ``sorting``) with its settings.

    Args:
        name: a key of :data:`TASKS`.
        **kwargs: the task class's settings, e.g. ``digits`` (addition), ``length``
            (sorting), ``count`` / ``max_number`` (countdown), ``format_coef``, ``seed``.

    Returns:
        The task instance.

    Raises:
        ValueError: ``name`` is not a known task.
    """
    check_choice(name, "task", tuple(TASKS))
    return TASKS[name](**kwargs)


def reward(
    task: "GeneratedTask | MathDataset", problem: Problem, response: str, ended: bool = True
) -> float:
    """1[correct] + format_coef * 1[well formed]; an unterminated response earns nothing.

    Args:
        task: the prompt source that scores (anything with ``score(problem, response)``).
        problem: the problem answered.
        response: the decoded reply.
        ended: whether the reply emitted an EOS; False gives reward 0.

    Returns:
        The reward (0 when not ended).
    """
    return task.score(problem, response).reward if ended else 0.0


def rewards(
    task: "GeneratedTask | MathDataset",
    problems: Sequence[Problem],
    responses: Sequence[str],
    ended: Sequence[bool] | None = None,
) -> np.ndarray:
    """:func:`reward` for a batch, as float32 ``[B]``.

    Args:
        task: the prompt source that scores (see :func:`reward`).
        problems: the B problems.
        responses: the B decoded replies, one per problem.
        ended: per reply whether it emitted an EOS; None: all ended.

    Returns:
        float32 ``[B]`` rewards.
    """
    ended = [True] * len(problems) if ended is None else ended
    return np.asarray(
        [reward(task, p, r, e) for p, r, e in zip(problems, responses, ended, strict=True)],
        np.float32,
    )
