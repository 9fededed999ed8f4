"""RLVR datasets from local JSONL / Parquet files: fields, prompt template, seeded order, splits.

A row holds a question and a gold answer under configurable field names (a dotted name such as
``reward_model.ground_truth`` reads a nested field). The prompt is the template with
``{question}`` replaced by the question; other braces are literal, so a template may say
``... output the final answer within \\boxed{}``. The gold answer is extracted once at load
(GSM8K ``#### 42`` or MATH ``\\boxed{...}``, see :mod:`entropix.tasks.math_answers`).

Order: train step ``s`` with batch size ``n`` takes the items ``g = s*n .. s*n + n - 1`` of an
endless stream that walks epoch permutations of the train split,

    item g = train[perm_e[i]],  (e, i) = divmod(g, len(train)),  perm_e = permutation by (seed, e)

so ``train_problems(step, n)`` is a pure function of ``(seed, step, n)``: the resumable
position is the step the trainer already checkpoints (a run resumed at step s sees exactly the
problems an uninterrupted run would), provided the batch size n stays the same.

Splits: ``eval_path`` (a second file) or a held-out part of the train file (``eval_fraction``
or ``eval_size`` rows, chosen by ``split_seed``, independent of the order ``seed`` so that runs
with different seeds share their splits). The eval split keeps file order.

Bad data fails at construction with one line naming the file and line (Parquet: row index): a
missing file, an empty file, a malformed JSON line, a row without the question/answer field or
with a gold answer that ``answer_format`` cannot read. Bad model output never raises: it scores
0 and counts as unparsed.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from entropix.tasks.arithmetic import Problem
from entropix.tasks.evaluation import evaluate_samples
from entropix.tasks.math_answers import (
    ANSWER_FORMATS,
    VERIFIERS,
    Score,
    cluster_answers,
    equality,
    extract_answer,
    normalize_answer,
    score_response,
)
from entropix.validation import check_choice

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")


def _field(row: dict, field: str, where: str):
    """``row[field]``, descending into nested dicts for a dotted name; a one-line error."""
    if field in row:
        value = row[field]
    else:
        value = row
        for part in field.split("."):
            if not isinstance(value, dict) or part not in value:
                present = ", ".join(map(repr, row)) or "none"
                raise ValueError(f"{where}: missing field {field!r} (fields present: {present})")
            value = value[part]
    if value is None:
        raise ValueError(f"{where}: field {field!r} is null")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(
            f"{where}: field {field!r} must be a string or a number; got {type(value).__name__}"
        )
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: field {field!r} is empty")
    return text


def _jsonl_rows(path: Path):
    """(where, row) for each non-blank line of a JSONL file."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not UTF-8 ({e.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def _parquet_rows(path: Path, fields: Sequence[str]):
    """(where, row) for each row of a Parquet file, reading only the columns ``fields`` need."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from e
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
    columns = []
    for field in fields:
        column = field if field in names else field.split(".")[0]
        if column not in names:
            present = ", ".join(map(repr, names)) or "none"
            raise ValueError(f"{path}: row 0: missing field {field!r} (columns: {present})")
        columns.append(column)
    try:
        table = parquet.read(columns=sorted(set(columns)))
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
    for index, row in enumerate(table.to_pylist()):
        yield f"{path}: row {index}", row


def load_records(
    path: str | Path, question_field: str = "question", answer_field: str = "answer"
) -> list[tuple[str, str, str]]:
    """``[(where, question, answer_text)]`` from a JSONL or Parquet file, validated.

    ``where`` is ``"file:line"`` (JSONL, 1-based, blank lines skipped) or ``"file: row i"``
    (Parquet, 0-based). Raises ``FileNotFoundError`` / one-line ``ValueError`` naming the file
    and line on a missing, empty, unreadable or malformed file or a bad row.

    Args:
        path: a ``.jsonl`` / ``.ndjson`` or ``.parquet`` / ``.pq`` file.
        question_field: the question's field name (dotted for a nested field).
        answer_field: the gold answer's field name (dotted for a nested field).

    Returns:
        One ``(where, question, answer_text)`` per row, in file order; the texts are
        non-empty strings (numbers are converted).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is empty, of an unknown type, unreadable or malformed, or a row
            lacks a field (the message names file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty data file (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        rows = _jsonl_rows(path)
    elif suffix in PARQUET_SUFFIXES:
        rows = _parquet_rows(path, (question_field, answer_field))
    else:
        known = ", ".join(JSONL_SUFFIXES + PARQUET_SUFFIXES)
        raise ValueError(f"{path}: unknown data file type {suffix!r}; expected one of {known}")
    records = [
        (where, _field(row, question_field, where), _field(row, answer_field, where))
        for where, row in rows
    ]
    if not records:
        raise ValueError(f"{path}: empty data file (no rows)")
    return records


class MathDataset:
    """An RLVR dataset of math word problems with a verifiable final answer.

    ``train_problems(step, n)`` is the seeded, resumable train order (module docstring);
    ``eval_problems(n)`` the fixed held-out split; ``score`` the math-verify equivalence reward
    ``1[equal(gold, extract(response))]`` (see :mod:`entropix.tasks.math_answers`), 0 and
    ``parsed=False`` when the response holds no answer of ``response_format``.

    Args:
        path: train file (``.jsonl`` / ``.ndjson`` / ``.parquet``).
        question_field, answer_field: field names (dotted for nested fields).
        template: the prompt; ``{question}`` is replaced by the question, other text is literal.
        answer_format: how to read the gold field: ``"gsm8k"`` (``#### 42``), ``"boxed"`` (last
            ``\\boxed{}``), ``"plain"`` (the whole field), ``"auto"`` (per row: boxed, else
            ``####``, else the whole field).
        response_format: how to read a model response (same choices; ``"auto"``: boxed, else
            ``####``, else unparsed).
        verifier: ``"math"`` (math-verify equivalence) or ``"exact"`` (normalised string match).
        seed: order seed (epoch e is the permutation seeded by ``(seed, e)``).
        eval_path: a separate eval file (same fields and formats).
        eval_fraction, eval_size: hold out this fraction / number of train-file rows instead.
        split_seed: which rows are held out (independent of ``seed``).
        timeout_seconds: math-verify time bound per parse / comparison (main thread only).
    """

    def __init__(
        self,
        path,
        *,
        question_field: str = "question",
        answer_field: str = "answer",
        template: str = "{question}",
        answer_format: str = "auto",
        response_format: str = "auto",
        verifier: str = "math",
        seed: int = 0,
        eval_path=None,
        eval_fraction: float = 0.0,
        eval_size: int | None = None,
        split_seed: int = 0,
        name: str = "math",
        timeout_seconds: int | None = 5,
    ):
        check_choice(answer_format, "answer_format", ANSWER_FORMATS)
        check_choice(response_format, "response_format", ANSWER_FORMATS)
        check_choice(verifier, "verifier", VERIFIERS)
        if "{question}" not in template:
            raise ValueError(f"template must contain '{{question}}'; got {template!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        if verifier == "math":
            try:
                import math_verify  # noqa: F401  (fail at construction, not at the first reward)
            except ImportError as e:
                raise ImportError(
                    "verifier='math' needs math-verify: pip install math-verify"
                ) from e
        self.name, self.seed, self.template = name, seed, template
        self.answer_format, self.response_format = answer_format, response_format
        self.verifier, self.timeout_seconds = verifier, timeout_seconds
        self._equal = equality(verifier, timeout_seconds=timeout_seconds)
        fields = dict(question_field=question_field, answer_field=answer_field)
        problems = self._problems(load_records(path, **fields), answer_field)
        held_out = self._held_out(len(problems), eval_path, eval_fraction, eval_size, split_seed)
        if eval_path is not None:
            self._eval = self._problems(load_records(eval_path, **fields), answer_field)
            self._train = problems
        else:
            self._eval = [p for i, p in enumerate(problems) if i in held_out]
            self._train = [p for i, p in enumerate(problems) if i not in held_out]
        self._perms: dict[int, np.ndarray] = {}

    def _problems(self, records, answer_field: str) -> list[Problem]:
        problems = []
        for where, question, answer_text in records:
            gold = extract_answer(answer_text, self.answer_format, plain_fallback=True)
            if gold is None:
                raise ValueError(
                    f"{where}: field {answer_field!r} has no {self.answer_format} answer "
                    f"({answer_text[-60:]!r})"
                )
            problems.append(Problem(self.template.replace("{question}", question), gold, ()))
        return problems

    @staticmethod
    def _held_out(rows: int, eval_path, eval_fraction, eval_size, split_seed) -> set[int]:
        """Indices of the train-file rows held out for evaluation (file order kept)."""
        if eval_fraction and eval_size is not None:
            raise ValueError("give eval_fraction or eval_size, not both")
        if eval_path is not None and (eval_fraction or eval_size is not None):
            raise ValueError("give eval_path or eval_fraction/eval_size, not both")
        if not 0.0 <= eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1); got {eval_fraction}")
        count = eval_size if eval_size is not None else round(eval_fraction * rows)
        if eval_fraction and count == 0:
            count = 1
        if count < 0 or count >= rows:
            raise ValueError(
                f"the eval split must leave train rows: {count} of {rows} rows held out"
            )
        return set(np.random.default_rng([split_seed, rows]).permutation(rows)[:count].tolist())

    def __len__(self) -> int:
        """The train split size."""
        return len(self._train)

    @property
    def num_eval(self) -> int:
        """The eval split size (0 without an eval split)."""
        return len(self._eval)

    def _permutation(self, epoch: int) -> np.ndarray:
        """perm_e: the order of the train split in epoch e, seeded by (seed, e)."""
        if epoch not in self._perms:
            if len(self._perms) >= 4:
                self._perms.pop(next(iter(self._perms)))
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = rng.permutation(len(self._train))
        return self._perms[epoch]

    def position(self, step: int, n: int) -> tuple[int, int]:
        """(epoch, index in that epoch's permutation) of the first problem of train step ``step``
        with batch size ``n``: ``divmod(step * n, len(train))``.

        Args:
            step: the train step (>= 0).
            n: the batch size (>= 1).

        Returns:
            ``(epoch, index)``.

        Raises:
            ValueError: ``step < 0`` or ``n < 1``.
        """
        if step < 0 or n < 1:
            raise ValueError(f"step must be >= 0 and n >= 1; got step={step}, n={n}")
        return divmod(step * n, len(self._train))

    def train_problems(self, step: int, n: int) -> list[Problem]:
        """The n problems of train step ``step``: items ``step*n .. step*n+n-1`` of the seeded
        epoch-permutation stream (a pure function of (seed, step, n); crosses epochs).

        Args:
            step: the train step (>= 0).
            n: the batch size (>= 1; keep it fixed across a resumed run).

        Returns:
            ``n`` :class:`Problem` s (``prompt``: the filled template, ``answer``: the gold).
        """
        epoch, index = self.position(step, n)
        size = len(self._train)
        out = []
        for _ in range(n):
            out.append(self._train[int(self._permutation(epoch)[index])])
            index += 1
            if index == size:
                epoch, index = epoch + 1, 0
        return out

    def eval_problems(self, n: int | None = None) -> list[Problem]:
        """The first n problems of the eval split in file order (all when n is None; [] without
        an eval split).

        Args:
            n: how many problems; None for the whole split.

        Returns:
            Up to ``n`` :class:`Problem` s (fewer when the split is smaller).
        """
        return list(self._eval if n is None else self._eval[:n])

    def question(self, problem: Problem) -> str:
        """The prompt text: the template filled with the question.

        Args:
            problem: a problem of this dataset.

        Returns:
            ``problem.prompt``.
        """
        return problem.prompt

    def extract(self, response: str) -> str | None:
        """The final answer in a model response by ``response_format`` (None: unparsed).

        Args:
            response: the decoded reply.

        Returns:
            The answer text, or None when the response holds none.
        """
        return extract_answer(response, self.response_format)

    def answer(self, problem: Problem, response: str) -> str | None:
        """The response's answer without reading the gold one (majority votes): the extracted
        answer, normalised for exact match (``normalize_answer``); None when unparsed.

        Args:
            problem: the problem answered (not read).
            response: the decoded reply.

        Returns:
            The normalised answer, or None when unparsed.
        """
        del problem
        extracted = self.extract(response)
        return None if extracted is None else normalize_answer(extracted)

    def score(self, problem: Problem, response: str) -> Score:
        """``Score(reward=1[equal(gold, extract(response))], correct, parsed)``; never raises.

        Args:
            problem: the problem answered (``problem.answer`` is the gold answer).
            response: the decoded reply.

        Returns:
            The :class:`Score`: reward 1.0 or 0.0, correct, parsed.
        """
        return score_response(
            problem.answer,
            response,
            response_format=self.response_format,
            verifier=self.verifier,
            timeout_seconds=self.timeout_seconds,
        )

    def evaluate(
        self,
        problems: Sequence[Problem],
        responses: Sequence[Sequence[str]],
        ks: Sequence[int] = (1,),
        prefix: str = "eval/",
    ) -> dict[str, float]:
        """pass@1, unbiased pass@k and maj@k over the n responses of each problem, plus the
        fraction of unparsed responses (``prefix + "unparsed_frac"``).

        Votes go to answer clusters: every correct answer is one cluster (all equal the gold);
        wrong answers are grouped by the verifier (see :func:`evaluation.maj_at_k`).

        Args:
            problems: the P problems evaluated.
            responses: for each problem its n >= max(ks) decoded replies.
            ks: the k of pass@k / maj@k (1 is always included).
            prefix: prepended to every metric name.

        Returns:
            ``{prefix + "pass@k", prefix + "maj@k"}`` for each k (means over problems, in
            [0, 1]) and ``prefix + "unparsed_frac"``.

        Raises:
            ValueError: ``problems`` and ``responses`` differ in length, or a problem has
                fewer than max(ks) responses.
        """
        if len(problems) != len(responses):
            raise ValueError(f"{len(problems)} problems but {len(responses)} response lists")
        correct, keys, unparsed, total = [], [], 0, 0
        for problem, samples in zip(problems, responses, strict=True):
            scores = [self.score(problem, r) for r in samples]
            answers = [
                self.extract(r) if s.parsed and not s.correct else None
                for r, s in zip(samples, scores, strict=True)
            ]
            wrong = cluster_answers(answers, self._equal)
            keys.append(["gold" if s.correct else w for s, w in zip(scores, wrong, strict=True)])
            correct.append([s.correct for s in scores])
            unparsed += sum(not s.parsed for s in scores)
            total += len(scores)
        metrics = evaluate_samples(correct, keys, ks, prefix)
        metrics[f"{prefix}unparsed_frac"] = unparsed / max(total, 1)
        return metrics
