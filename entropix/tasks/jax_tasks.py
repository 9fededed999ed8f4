"""Generated tasks in JAX: problems sampled, encoded and scored on device, for one compiled run.

For the tasks whose reward compares the reply with the canonical answer (addition, sorting),
the whole data stage can run inside a compiled program (``entropix.rl.seeds``): a
:class:`JaxTask` draws problems from a PRNG key, encodes them for the character codec exactly
as :func:`entropix.tasks.codecs.encode_prompts` / ``encode_answers`` lay them out, and scores
generated ids exactly as the host does (``task.score(problem, codec.decode(row))`` with the
rollout's ``require_eos`` rule):

    reply   = the reply's ids before its first EOS, special ids (pad, bos) dropped
              (what ``CharTokenizer.decode`` reads)
    correct = reply == the answer's ids        (string equality, as ``Addition.correct``)
    formed  = reply matches the task's format  (``-?[0-9]+`` / ``[0-9]+(,[0-9]+)*``)
    reward  = 1[correct] + format_coef * 1[formed], and 0 (correct 0) when ``require_eos``
              and the reply emitted no EOS

Problems come from the key, not from the host task's numpy streams: the same distribution
(operands uniform in [0, 10^digits), digits uniform in 0..9), other draws.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from entropix.rollout.generate import left_align
from entropix.tasks.arithmetic import Addition, GeneratedTask, Sorting
from entropix.tasks.codecs import CharCodec, ChatCodec, Layout
from entropix.tasks.datasets import MathDataset
from entropix.tasks.tokenizer import BOS, EOS, PAD, SPECIALS, CharTokenizer

_TOKENIZER = CharTokenizer()
# id of digit d: DIGITS[d] (numpy: importing this module must not start a JAX backend)
DIGITS = np.asarray(_TOKENIZER.encode("0123456789"), np.int32)
PLUS, EQUALS, COMMA, GREATER, MINUS = _TOKENIZER.encode("+=,>-")


def _is_digit(ids):
    return (ids >= DIGITS[0]) & (ids <= DIGITS[9])


def _number(x, width: int):
    """Decimal ids of non-negative ints ``x`` [n], right-aligned in ``width`` columns, and
    the mask of the real digits (no leading zeros; 0 is the one digit "0")."""
    powers = 10 ** jnp.arange(width - 1, -1, -1, dtype=jnp.int32)
    digits = (x[:, None] // powers) % 10
    length = jnp.maximum(1, jnp.sum(x[:, None] >= powers, axis=1))
    return jnp.asarray(DIGITS)[digits], jnp.arange(width) >= width - length[:, None]


def _left_pad(ids, mask, width: int):
    """Rows of real tokens ``(ids, mask)`` packed to the right end of ``width`` columns, pads
    (``PAD``) first: the layout of :func:`entropix.tasks.codecs.encode_prompts`."""
    ids, mask = left_align(ids, mask, PAD)
    pad = width - ids.shape[1]
    return (
        jnp.pad(ids, ((0, 0), (pad, 0)), constant_values=PAD),
        jnp.pad(mask, ((0, 0), (pad, 0)), constant_values=False),
    )


def _right_pad(ids, mask, width: int):
    """Rows of real tokens packed to the left of ``width`` columns (order kept), ``PAD`` after."""
    order = jnp.argsort(~mask, axis=-1, stable=True)
    ids = jnp.take_along_axis(ids, order, axis=-1)
    mask = jnp.take_along_axis(mask, order, axis=-1)
    ids = jnp.where(mask, ids, PAD)
    pad = width - ids.shape[1]
    if pad < 0:
        return ids[:, :width], mask[:, :width]
    return (
        jnp.pad(ids, ((0, 0), (0, pad)), constant_values=PAD),
        jnp.pad(mask, ((0, 0), (0, pad)), constant_values=False),
    )


def reply_ids(tokens: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(ids [B, N], length [B])``: each reply's ids before its first EOS with the special ids
    dropped, packed left and ``PAD``-filled (the characters ``CharTokenizer.decode`` gives).

    Args:
        tokens: int ``[B, N]`` generated ids (character codec).

    Returns:
        ``(ids, length)``: int ``[B, N]`` reply ids packed left, ``PAD`` after, and int32
        ``[B]`` the number of real reply ids per row.
    """
    before_eos = jnp.cumsum(tokens == EOS, axis=1) == 0
    keep = before_eos & (tokens >= len(SPECIALS))
    ids, _ = _right_pad(tokens, keep, tokens.shape[1])
    return ids, jnp.sum(keep, axis=1)


def _equal(a, b):
    """Row-wise equality of two ``PAD``-filled id arrays of any widths."""
    width = max(a.shape[1], b.shape[1])
    pad = lambda x: jnp.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=PAD)
    return jnp.all(pad(a) == pad(b), axis=1)


class JaxTask:
    """A generated task on device: ``sample(key, n)`` -> encoded problems, ``score(tokens,
    target, require_eos)`` -> the host's rewards (see the module docstring). Subclasses give
    ``_problems(key, n)`` (prompt ids + mask, answer ids + mask, unpadded) and
    ``_well_formed(ids, length)``."""

    def __init__(self, task, layout: Layout):
        self.task, self.layout = task, layout
        self.format_coef = float(task.format_coef)
        self.answer_len = task.max_answer_len()
        longest = self.max_prompt_len()
        if longest > layout.prompt_len:
            raise ValueError(
                f"a {task.name} prompt can have {longest} tokens, more than the layout's "
                f"{layout.prompt_len} (raise rollout.max_prompt_tokens)"
            )

    def sample(self, key: jax.Array, n: int) -> dict[str, jax.Array]:
        """``n`` problems: ``prompt`` / ``prompt_mask`` [n, P] (left-padded, as
        ``encode_prompts``), ``answer`` / ``answer_mask`` [n, N] (answer + EOS right-padded,
        as ``encode_answers``; cut at N) and ``target`` [n, answer_len] (the answer's ids,
        ``PAD``-filled: what :meth:`score` compares with).

        Args:
            key: the PRNG key the problems are drawn from.
            n: how many problems (static under ``jit``).

        Returns:
            ``{"prompt", "prompt_mask", "answer", "answer_mask", "target"}``: int32 ids and
            bool masks of the shapes above.
        """
        prompt, prompt_mask, answer, answer_mask = self._problems(key, n)
        prompt, prompt_mask = _left_pad(prompt, prompt_mask, self.layout.prompt_len)
        target, _ = _right_pad(answer, answer_mask, self.answer_len)
        with_eos = jnp.concatenate([answer, jnp.full((n, 1), EOS, jnp.int32)], axis=1)
        eos_mask = jnp.concatenate([answer_mask, jnp.ones((n, 1), bool)], axis=1)
        answer, answer_mask = _right_pad(with_eos, eos_mask, self.layout.new_tokens)
        return {
            "prompt": prompt,
            "prompt_mask": prompt_mask,
            "answer": answer,
            "answer_mask": answer_mask,
            "target": target,
        }

    def score(
        self, tokens: ArrayLike, target: ArrayLike, require_eos: bool = True
    ) -> dict[str, jax.Array]:
        """``rewards``, ``correct``, ``parsed`` and ``ended`` [B] (float32) of generated ids
        ``tokens`` [B, N] against ``target`` (from :meth:`sample`), as the host scores them.

        Args:
            tokens: int ``[B, N]`` generated reply ids.
            target: int ``[B, answer_len]`` the answers' ids, ``PAD``-filled (``sample``'s
                ``target``).
            require_eos: a reply without EOS earns reward 0 (and is not correct).

        Returns:
            ``{"rewards", "correct", "parsed", "ended"}``, each float32 ``[B]`` (the last
            three 0/1).
        """
        ids, length = reply_ids(tokens)
        ended = jnp.any(tokens == EOS, axis=1)
        correct = _equal(ids, target)
        formed = self._well_formed(ids, length)
        counts = ended if require_eos else jnp.ones_like(ended)
        reward = correct.astype(jnp.float32) + self.format_coef * formed.astype(jnp.float32)
        return {
            "rewards": jnp.where(counts, reward, 0.0),
            "correct": (counts & correct).astype(jnp.float32),
            "parsed": formed.astype(jnp.float32),
            "ended": ended.astype(jnp.float32),
        }


class JaxAddition(JaxTask):
    """``a+b=`` -> ``a+b`` (:class:`entropix.tasks.Addition`) on device."""

    def max_prompt_len(self) -> int:
        """The longest prompt: ``<bos>``, two ``digits``-digit operands, ``+`` and ``=``.

        Returns:
            ``2 * digits + 3`` tokens.
        """
        return 1 + 2 * self.task.digits + 2  # <bos> a + b =

    def _problems(self, key, n):
        d = self.task.digits
        ka, kb = jax.random.split(key)
        a = jax.random.randint(ka, (n,), 0, 10**d, jnp.int32)
        b = jax.random.randint(kb, (n,), 0, 10**d, jnp.int32)
        (a_ids, a_mask), (b_ids, b_mask) = _number(a, d), _number(b, d)
        column = lambda v: jnp.full((n, 1), v, jnp.int32)
        ones = jnp.ones((n, 1), bool)
        prompt = jnp.concatenate([column(BOS), a_ids, column(PLUS), b_ids, column(EQUALS)], 1)
        prompt_mask = jnp.concatenate([ones, a_mask, ones, b_mask, ones], axis=1)
        answer, answer_mask = _number(a + b, d + 1)
        return prompt, prompt_mask, answer, answer_mask

    def _well_formed(self, ids, length):
        """``-?[0-9]+``: an optional leading minus, then one or more digits."""
        position = jnp.arange(ids.shape[1])
        minus = ids[:, 0] == MINUS
        digits = _is_digit(ids) | ((position == 0) & minus[:, None])
        inside = position < length[:, None]
        return jnp.all(digits | ~inside, axis=1) & (length >= 1 + minus)


class JaxSorting(JaxTask):
    """``5,3,8>`` -> ``3,5,8`` (:class:`entropix.tasks.Sorting`) on device."""

    def max_prompt_len(self) -> int:
        """The prompt's length: ``<bos>``, ``length`` digits with commas between, ``>``.

        Returns:
            ``2 * length + 1`` tokens.
        """
        return 1 + 2 * self.task.length  # <bos> d,d,...,d >

    def _joined(self, values):
        """Ids of ``d,d,...,d`` for digit rows ``values`` [n, L] (all real)."""
        n, length = values.shape
        commas = jnp.full((n, length), COMMA, jnp.int32)
        return jnp.stack([jnp.asarray(DIGITS)[values], commas], axis=2).reshape(n, 2 * length)[
            :, :-1
        ]

    def _problems(self, key, n):
        values = jax.random.randint(key, (n, self.task.length), 0, 10, jnp.int32)
        column = lambda v: jnp.full((n, 1), v, jnp.int32)
        prompt = jnp.concatenate([column(BOS), self._joined(values), column(GREATER)], axis=1)
        answer = self._joined(jnp.sort(values, axis=1))
        return prompt, jnp.ones(prompt.shape, bool), answer, jnp.ones(answer.shape, bool)

    def _well_formed(self, ids, length):
        """``[0-9]+(,[0-9]+)*``: digits and commas, a digit first and last, no ``,,``."""
        inside = jnp.arange(ids.shape[1]) < length[:, None]
        digit, comma = _is_digit(ids), ids == COMMA
        last = jnp.take_along_axis(ids, jnp.maximum(length - 1, 0)[:, None], axis=1)[:, 0]
        double = comma[:, :-1] & comma[:, 1:] & inside[:, 1:]
        return (
            (length >= 1)
            & jnp.all((digit | comma) | ~inside, axis=1)
            & _is_digit(ids[:, 0])
            & _is_digit(last)
            & ~jnp.any(double, axis=1)
        )


JAX_TASKS = {Addition: JaxAddition, Sorting: JaxSorting}


def jax_task(
    task: GeneratedTask | MathDataset, codec: CharCodec | ChatCodec, layout: Layout
) -> JaxTask:
    """The on-device version of ``task`` (an :class:`Addition` or :class:`Sorting`, not a
    subclass, whose scoring may differ) for the character codec without an answer marker;
    anything else is a one-line ``ValueError`` saying why.

    Args:
        task: the host prompt source; only :class:`Addition` and :class:`Sorting` have one.
        codec: the run's codec; must be a :class:`CharCodec` with no answer marker.
        layout: the sequence layout the encoded problems fill.

    Returns:
        The :class:`JaxAddition` / :class:`JaxSorting` for ``task``.

    Raises:
        ValueError: another task or codec, an answer marker, or a layout too short for the
            task's prompts.
    """
    kind = JAX_TASKS.get(type(task))
    if kind is None:
        names = ", ".join(c.__name__ for c in JAX_TASKS)
        raise ValueError(
            f"the prompt source {getattr(task, 'name', type(task).__name__)!r} "
            f"({type(task).__name__}) has no JAX reward (only {names} do)"
        )
    if not isinstance(codec, CharCodec):
        raise ValueError(
            "a JAX reward needs the character codec (model.source=tiny); "
            f"got {type(codec).__name__}"
        )
    if codec.marker_ids:
        raise ValueError("a JAX reward reads the whole reply: rollout.answer_marker must be empty")
    return kind(task, layout)
