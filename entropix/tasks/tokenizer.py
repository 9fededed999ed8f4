"""A character-level tokenizer shared by the verifiable-reward tasks and the text corpus.

Ids: 0 = ``<pad>``, 1 = ``<bos>``, 2 = ``<eos>``, then one id per character of :data:`ALPHABET`
(space, digits, arithmetic and list punctuation, lowercase letters). Small enough for the tiny
decoder; every task prompt and answer is spelled in it.
"""

from collections.abc import Sequence

import numpy as np

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
ALPHABET = " 0123456789+-*/()=,.:>?abcdefghijklmnopqrstuvwxyz"


class CharTokenizer:
    """Text <-> int32 ids over :data:`ALPHABET`; unknown characters are an error."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(self, alphabet: str = ALPHABET):
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("alphabet has repeated characters")
        self.alphabet = alphabet
        self._ids = {ch: i + len(SPECIALS) for i, ch in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.alphabet)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of ``text``, optionally wrapped in ``<bos>`` / ``<eos>``.

        Args:
            text: characters of the alphabet only.
            bos: prepend ``<bos>``.
            eos: append ``<eos>``.

        Returns:
            The token ids, one per character (plus the specials asked for).

        Raises:
            ValueError: ``text`` has a character outside the alphabet.
        """
        unknown = sorted(set(text) - set(self._ids))
        if unknown:
            raise ValueError(f"characters {unknown} are not in the tokenizer alphabet")
        return [BOS] * bos + [self._ids[ch] for ch in text] + [EOS] * eos

    def decode(self, ids: Sequence[int], stop_at_eos: bool = True) -> str:
        """Text of ``ids``: specials are dropped and decoding stops at the first ``<eos>``.

        Args:
            ids: token ids (list or int array ``[L]``).
            stop_at_eos: stop at the first ``<eos>``; False decodes past it (dropping it).

        Returns:
            The decoded text.
        """
        out = []
        for i in np.asarray(ids).tolist():
            if i == EOS and stop_at_eos:
                break
            if i >= len(SPECIALS):
                out.append(self.alphabet[i - len(SPECIALS)])
        return "".join(out)

    def ended(self, ids: Sequence[int]) -> bool:
        """Whether ``ids`` contains ``<eos>`` (the response was terminated).

        Args:
            ids: token ids (list or int array ``[L]``).

        Returns:
            True when an ``<eos>`` occurs.
        """
        return EOS in np.asarray(ids).tolist()


def pad_batch(
    seqs: Sequence[Sequence[int]], length: int | None = None, left: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Stack id lists into int32 ``[B, L]`` with ``<pad>`` (left or right) and a bool mask.

    Args:
        seqs: the B id lists.
        length: L; None uses the longest sequence's length.
        left: pad on the left (prompts) instead of the right.

    Returns:
        ``(ids, mask)``: int32 ``[B, L]`` padded ids and bool ``[B, L]`` (True on real tokens).

    Raises:
        ValueError: a sequence is longer than ``length``.
    """
    length = max(len(s) for s in seqs) if length is None else length
    if any(len(s) > length for s in seqs):
        raise ValueError(f"a sequence is longer than length={length}")
    ids = np.full((len(seqs), length), PAD, np.int32)
    mask = np.zeros((len(seqs), length), bool)
    for row, seq in enumerate(seqs):
        cols = slice(length - len(seq), length) if left else slice(0, len(seq))
        ids[row, cols] = seq
        mask[row, cols] = True
    return ids, mask
