"""Sampling-based evaluation over n samples per problem: pass@1, unbiased pass@k and maj@k.

pass@k is the probability that at least one of k samples drawn without replacement from the
n generated ones is correct, estimated without bias ("Evaluating Large Language Models Trained
on Code", Chen et al. 2021):

    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k/i)

(the product form never forms the huge binomials). maj@k ("Self-Consistency Improves Chain of
Thought Reasoning", Wang et al. 2023; "maj1@k" in Minerva, Lewkowycz et al. 2022) is the
accuracy of the plurality answer of k samples; over n >= k samples it is estimated without bias
by the exact expectation over all C(n, k) k-subsets. Tie rule: a tie between the top answers
is broken uniformly at random, so a subset whose top answers are s tied clusters, one of them
correct, counts 1/s. Unparsed samples (answer key None) do not vote; a subset with no votes
counts 0. maj@1 = pass@1.
"""

from collections.abc import Sequence
from math import comb

import numpy as np

MAX_VOTE_SAMPLES = 1000  # C(n, k) stays inside float64 for n <= 1020


def _check_k(n: int, k: int, what: str = "samples") -> None:
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n] with n = {n} {what} per problem; got k={k}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (stable; Chen et al. 2021, "Evaluating
    Large Language Models Trained on Code", Fig. 3); 1.0 when ``n - c < k``.

    Args:
        n: the samples drawn for the problem (>= 1).
        c: how many of them are correct, in [0, n].
        k: the budget, in [1, n].

    Returns:
        pass@k in [0, 1].

    Raises:
        ValueError: ``c`` outside [0, n] or ``k`` outside [1, n].
    """
    n, c, k = int(n), int(c), int(k)
    if not 0 <= c <= n:
        raise ValueError(f"the number correct c must be in [0, n={n}]; got c={c}")
    _check_k(n, k)
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def maj_at_k(keys: Sequence, correct: Sequence[bool], k: int) -> float:
    """Unbiased maj@k: the expected accuracy of the plurality answer of k of the n samples.

    ``keys[i]`` is sample i's answer cluster (equal keys = the same answer; None = unparsed, no
    vote) and ``correct[i]`` whether it is right (all samples of one key must agree; a None key
    is never correct). maj@k = sum over k-subsets S of [#correct top clusters of S / #top
    clusters of S] / C(n, k) (ties broken uniformly at random), computed exactly with a
    generating polynomial per top count t, O(k^2 * clusters) array operations; n <= 1000.
    Reference: majority voting / self-consistency (Wang et al. 2023), maj1@k (Lewkowycz et al.
    2022).

    Args:
        keys: the n samples' answer keys (hashable; None = unparsed).
        correct: the n samples' correctness.
        k: the votes per subset, in [1, n].

    Returns:
        maj@k in [0, 1].

    Raises:
        ValueError: lengths differ, ``k`` is outside [1, n], n > :data:`MAX_VOTE_SAMPLES`,
            a None key is marked correct, or samples of one key disagree on correctness.
    """
    n = len(keys)
    if len(correct) != n:
        raise ValueError(
            f"keys and correct must have one entry per sample; got {n} and {len(correct)}"
        )
    _check_k(n, k)
    if n > MAX_VOTE_SAMPLES:
        raise ValueError(f"maj_at_k supports at most {MAX_VOTE_SAMPLES} samples; got {n}")
    sizes: dict = {}
    right: dict = {}
    abstain = 0
    for key, ok in zip(keys, correct, strict=True):
        if key is None:
            if ok:
                raise ValueError("a sample with answer key None (unparsed) cannot be correct")
            abstain += 1
            continue
        if key in right and right[key] != bool(ok):
            raise ValueError(f"samples with the same answer key {key!r} disagree on correctness")
        right[key] = bool(ok)
        sizes[key] = sizes.get(key, 0) + 1
    abstain_poly = np.array([comb(abstain, j) for j in range(k + 1)], np.float64)
    total = 0.0
    for key, m_c in sizes.items():
        if not right[key]:
            continue
        others = [m for other, m in sizes.items() if other != key]
        for t in range(1, min(m_c, k) + 1):
            width = k - t + 1  # items the other clusters and the abstainers may take
            # poly[s, x]: ways for the other clusters to take x items, s of them exactly t
            # (the rest fewer than t, so the correct cluster is among the s + 1 top ones).
            poly = np.zeros((len(others) + 1, width))
            poly[0, 0] = 1.0
            for m in others:
                new = np.zeros_like(poly)
                for j in range(min(t - 1, m, width - 1) + 1):
                    new[:, j:] += comb(m, j) * poly[:, : width - j]
                if m >= t and t < width:
                    new[1:, t:] += comb(m, t) * poly[:-1, : width - t]
                poly = new
            # the abstainers fill the remaining k - t - x items
            ways = poly @ abstain_poly[:width][::-1]
            share = 1.0 / np.arange(1, len(others) + 2)
            total += comb(m_c, t) * float(ways @ share)
    return total / comb(n, k)


def evaluate_samples(
    correct: Sequence[Sequence[bool]],
    keys: Sequence[Sequence] | None = None,
    ks: Sequence[int] = (1,),
    prefix: str = "eval/",
) -> dict[str, float]:
    """Mean over problems of pass@1, pass@k and (given answer keys) maj@k for each k in ``ks``.

    ``correct[p][i]``: whether sample i of problem p is right; ``keys[p][i]``: its answer
    cluster for voting (see :func:`maj_at_k`). Problems may have different sample counts n_p,
    each >= max(ks). Returns ``{prefix + "pass@1", prefix + "pass@k", prefix + "maj@k", ...}``.

    Args:
        correct: per problem, per sample whether it is right (P problems, n_p samples each).
        keys: per problem, per sample its answer key (None = unparsed); None skips maj@k.
        ks: the k of pass@k / maj@k (1 is always included).
        prefix: prepended to every metric name.

    Returns:
        ``{prefix + "pass@k": float}`` for each k (and ``prefix + "maj@k"`` given keys), each
        the mean over problems, in [0, 1].

    Raises:
        ValueError: no problems, ``keys`` of another length, or a problem with fewer than
            max(ks) samples.
    """
    if not correct:
        raise ValueError("evaluate_samples needs at least one problem")
    if keys is not None and len(keys) != len(correct):
        raise ValueError(f"keys has {len(keys)} problems but correct has {len(correct)}")
    ks = sorted({1, *(int(k) for k in ks)})
    for p, samples in enumerate(correct):
        if len(samples) < ks[-1]:
            raise ValueError(f"problem {p} has {len(samples)} samples, fewer than k={ks[-1]}")
    metrics = {}
    for k in ks:
        metrics[f"{prefix}pass@{k}"] = float(
            np.mean([pass_at_k(len(s), sum(map(bool, s)), k) for s in correct])
        )
    if keys is not None:
        for k in ks:
            metrics[f"{prefix}maj@{k}"] = float(
                np.mean([maj_at_k(kk, s, k) for kk, s in zip(keys, correct, strict=True)])
            )
    return metrics
