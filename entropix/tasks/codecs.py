"""Codecs: how a task's problems become token ids for a model, and token ids become replies.

A codec pairs a tokenizer with a prompt format. Every codec has ``vocab_size``, ``eos_id``,
``pad_id`` and

* ``prompt_ids(problem) -> list[int]``: the prompt the model continues,
* ``answer_ids(problem) -> list[int]``: the canonical answer + EOS (supervised warm-up),
* ``decode(row) -> str``: the reply the task scores (read up to the first EOS),
* ``ended(row) -> bool``: whether the reply emitted an EOS,
* ``answer_mask(row) -> bool [N]``: the answer-phase tokens of a reply (PEAR's split): the
  tokens after the first occurrence of ``answer_marker`` (e.g. ``"</think>"``), or every
  token when the codec has no marker.

Sequence layout of a batch (:class:`Layout`): ``[left-padded prompt (P) | response (N)]``, so
every prompt ends at column P - 1 and response token t sits at column P + t.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from entropix.tasks.arithmetic import Problem
from entropix.tasks.tokenizer import EOS, PAD, CharTokenizer, pad_batch


class Layout(NamedTuple):
    """Sequence layout: [left-padded prompt (P) | response (N)], total L = P + N."""

    prompt_len: int
    new_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_len + self.new_tokens


def _first_after(row: Sequence[int], marker: Sequence[int]) -> int:
    """Index just past the first occurrence of ``marker`` in ``row`` (len(row) if absent)."""
    m = len(marker)
    for i in range(len(row) - m + 1):
        if list(row[i : i + m]) == list(marker):
            return i + m
    return len(row)


class _Codec:
    """Shared reading of replies: up to the first EOS; answer phase after a marker."""

    eos_id: int
    marker_ids: tuple[int, ...] = ()

    def _until_eos(self, row) -> list[int]:
        row = np.asarray(row).tolist()
        return row[: row.index(self.eos_id)] if self.eos_id in row else row

    def ended(self, row) -> bool:
        return self.eos_id in np.asarray(row).tolist()

    def answer_mask(self, row) -> np.ndarray:
        row = np.asarray(row).tolist()
        mask = np.ones(len(row), bool)
        if self.marker_ids:
            mask[: _first_after(row, self.marker_ids)] = False
        return mask


class CharCodec(_Codec):
    """The tiny model's text interface: character ids, ``<bos>`` + prompt, answer + ``<eos>``."""

    def __init__(self, answer_marker: str = ""):
        self.tokenizer = CharTokenizer()
        self.vocab_size, self.eos_id, self.pad_id = self.tokenizer.vocab_size, EOS, PAD
        self.marker_ids = tuple(self.tokenizer.encode(answer_marker))

    def prompt_ids(self, problem: Problem) -> list[int]:
        """``<bos>`` + the problem's ``prompt`` as character ids.

        Args:
            problem: the problem to encode.

        Returns:
            The prompt's token ids.
        """
        return self.tokenizer.encode(problem.prompt, bos=True)

    def answer_ids(self, problem: Problem) -> list[int]:
        """The canonical answer + ``<eos>`` as character ids (the SFT target).

        Args:
            problem: the problem to encode.

        Returns:
            The answer's token ids, ending in EOS.
        """
        return self.tokenizer.encode(problem.answer, eos=True)

    def decode(self, row: Sequence[int] | np.ndarray) -> str:
        """The reply's text, read up to its first ``<eos>`` (specials dropped).

        Args:
            row: one reply's token ids ``[N]`` (int; list or array), EOS and padding
                included.

        Returns:
            The text the task scores.
        """
        return self.tokenizer.decode(row)


class ChatCodec(_Codec):
    """A pretrained checkpoint's tokenizer: ``question(problem)`` as one user turn of its chat
    template (or plain text with ``chat_template=False``); the reply is read up to its EOS.
    With ``after_last_equals`` the reply is cut after its last ``=`` (chat models tend to
    restate ``a + b = c`` before the number an arithmetic task checks)."""

    def __init__(
        self,
        tokenizer,
        question: Callable[[Problem], str],
        chat_template: bool = True,
        after_last_equals: bool = False,
        answer_marker: str = "",
    ):
        self.tokenizer, self.question, self.chat_template = tokenizer, question, chat_template
        self.after_last_equals = after_last_equals
        self.vocab_size, self.eos_id = tokenizer.vocab_size, tokenizer.eos_id
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        self.marker_ids = tuple(tokenizer.encode(answer_marker, False)) if answer_marker else ()

    def prompt_ids(self, problem: Problem) -> list[int]:
        """``question(problem)`` as one user turn of the chat template (the template adds
        the generation prompt and specials), or as plain text with ``chat_template=False``.

        Args:
            problem: the problem to encode.

        Returns:
            The prompt's token ids.
        """
        text = self.question(problem)
        if self.chat_template:
            message = [{"role": "user", "content": text}]
            return self.tokenizer.encode(self.tokenizer.apply_chat_template(message), False)
        return self.tokenizer.encode(text)

    def answer_ids(self, problem: Problem) -> list[int]:
        """The canonical answer's ids (no specials) + EOS (the SFT target).

        Args:
            problem: the problem to encode.

        Returns:
            The answer's token ids, ending in EOS.
        """
        return self.tokenizer.encode(problem.answer, False) + [self.eos_id]

    def decode(self, row: Sequence[int] | np.ndarray) -> str:
        """The reply's text up to its first EOS; with ``after_last_equals`` only what follows
        its last ``=`` (stripped, a trailing period dropped).

        Args:
            row: one reply's token ids ``[N]`` (int; list or array), EOS and padding
                included.

        Returns:
            The text the task scores.
        """
        text = self.tokenizer.decode(self._until_eos(row))
        if self.after_last_equals:
            text = text.rsplit("=", 1)[-1].strip().rstrip(".").strip()
        return text


def layout_for(
    codec: CharCodec | ChatCodec,
    problems: Sequence[Problem],
    new_tokens: int,
    prompt_len: int = 0,
) -> Layout:
    """The layout for ``problems``: ``prompt_len`` (0: their longest prompt + 2) and
    ``new_tokens`` response tokens.

    Args:
        codec: encodes the prompts.
        problems: the problems the layout must hold (used only when ``prompt_len`` is 0).
        new_tokens: N, the response tokens per sequence.
        prompt_len: P, the prompt columns; 0 sizes it from ``problems``.

    Returns:
        ``Layout(prompt_len=P, new_tokens=N)``.
    """
    if not prompt_len:
        prompt_len = max(len(codec.prompt_ids(p)) for p in problems) + 2
    return Layout(prompt_len, new_tokens)


def encode_prompts(
    codec: CharCodec | ChatCodec, problems: Sequence[Problem], layout: Layout
) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded ``[B, P]`` prompt ids and their bool mask; a prompt longer than P is an
    error naming the layout.

    Args:
        codec: encodes the prompts (its ``pad_id`` fills the padding).
        problems: the B problems.
        layout: gives P = ``layout.prompt_len``.

    Returns:
        ``(ids, mask)``: int32 ``[B, P]`` token ids and bool ``[B, P]`` (True on prompt tokens).

    Raises:
        ValueError: a prompt has more than P tokens.
    """
    ids = [codec.prompt_ids(p) for p in problems]
    longest = max(len(i) for i in ids)
    if longest > layout.prompt_len:
        raise ValueError(
            f"a prompt has {longest} tokens, more than the layout's {layout.prompt_len} "
            "(raise rollout.max_prompt_tokens)"
        )
    tokens, mask = pad_batch(ids, layout.prompt_len, left=True)
    return np.where(mask, tokens, codec.pad_id).astype(np.int32), mask


def encode_answers(
    codec: CharCodec | ChatCodec, problems: Sequence[Problem], layout: Layout
) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``[B, N]`` canonical answers + EOS and their bool mask (for SFT).

    Args:
        codec: encodes the answers (its ``pad_id`` fills the padding).
        problems: the B problems.
        layout: gives N = ``layout.new_tokens``.

    Returns:
        ``(ids, mask)``: int32 ``[B, N]`` token ids and bool ``[B, N]`` (True on answer
        tokens).

    Raises:
        ValueError: an answer has more than N tokens.
    """
    tokens, mask = pad_batch([codec.answer_ids(p) for p in problems], layout.new_tokens)
    return np.where(mask, tokens, codec.pad_id).astype(np.int32), mask
