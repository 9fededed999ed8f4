"""A tiny generated English-like corpus for language-model experiments.

Sentences come from a small grammar, ``det adj? noun verb det adj? noun .``, with a seeded
``numpy.random.Generator``; the text uses only the characters of the task tokenizer. It has
real structure (agreement-free but position-dependent) and is learnable in minutes on a CPU.
"""

import numpy as np

from entropix.tasks.tokenizer import CharTokenizer

_DET = ("the", "a", "every", "some")
_ADJ = ("small", "red", "quick", "old", "quiet", "bright")
_NOUN = ("cat", "dog", "bird", "fox", "child", "robot", "tree", "river")
_VERB = ("sees", "likes", "follows", "finds", "hears", "helps")


def sentence(rng: np.random.Generator) -> str:
    """One sentence of the grammar.

    Args:
        rng: the word source (advanced in place).

    Returns:
        The sentence, ending in a period.
    """

    def phrase() -> str:
        words = [_DET[rng.integers(len(_DET))]]
        if rng.random() < 0.5:
            words.append(_ADJ[rng.integers(len(_ADJ))])
        words.append(_NOUN[rng.integers(len(_NOUN))])
        return " ".join(words)

    return f"{phrase()} {_VERB[rng.integers(len(_VERB))]} {phrase()}."


def corpus(rng: np.random.Generator, n_sentences: int) -> str:
    """``n_sentences`` sentences joined by spaces.

    Args:
        rng: the word source (advanced in place).
        n_sentences: how many sentences.

    Returns:
        The corpus text.
    """
    return " ".join(sentence(rng) for _ in range(n_sentences))


def lm_windows(
    text: str,
    seq_len: int,
    batch_size: int,
    rng: np.random.Generator,
    tokenizer: CharTokenizer | None = None,
) -> np.ndarray:
    """A batch of random windows ``int32 [batch_size, seq_len + 1]`` (inputs + next tokens).

    Args:
        text: the corpus to cut windows from.
        seq_len: T, the input length; each window holds T + 1 tokens.
        batch_size: B, the windows drawn (start positions uniform, with replacement).
        rng: picks the start positions.
        tokenizer: encodes ``text``; None uses a default :class:`CharTokenizer`.

    Returns:
        int32 ``[B, T + 1]`` token ids.

    Raises:
        ValueError: ``text`` has at most T + 1 tokens.
    """
    ids = np.asarray((tokenizer or CharTokenizer()).encode(text), np.int32)
    if len(ids) <= seq_len + 1:
        raise ValueError(f"text has {len(ids)} tokens; need more than seq_len + 1 = {seq_len + 1}")
    starts = rng.integers(0, len(ids) - seq_len - 1, size=batch_size)
    return np.stack([ids[s : s + seq_len + 1] for s in starts])
