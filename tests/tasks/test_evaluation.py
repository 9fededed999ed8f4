"""pass@k and maj@k against brute-force enumeration over all k-subsets of the n samples."""

import itertools
import math

import numpy as np
import pytest

from entropix.tasks.evaluation import evaluate_samples, maj_at_k, pass_at_k


def brute_pass_at_k(n, c, k):
    """Fraction of k-subsets of n samples (the first c correct) holding a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def brute_maj_at_k(keys, correct, k):
    """Mean over k-subsets of the plurality vote's accuracy; ties split uniformly; None abstains."""
    good = {key for key, ok in zip(keys, correct, strict=True) if ok}
    total = 0.0
    subsets = list(itertools.combinations(range(len(keys)), k))
    for subset in subsets:
        votes = {}
        for i in subset:
            if keys[i] is not None:
                votes[keys[i]] = votes.get(keys[i], 0) + 1
        if votes:
            top = max(votes.values())
            winners = [key for key, v in votes.items() if v == top]
            total += sum(key in good for key in winners) / len(winners)
    return total / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_enumeration_and_comb_formula(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            formula = 1.0 - math.comb(n - c, k) / math.comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(formula, abs=1e-12)


def test_pass_at_k_large_n_is_stable():
    # C(1000, 500) overflows float64; the product form does not need it
    n, c, k = 2000, 3, 500
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)  # Python ints / true division: exact-ish
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)
    assert pass_at_k(n, 0, k) == 0.0
    assert pass_at_k(10, 4, 1) == pytest.approx(0.4)  # pass@1 = c / n


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k must be in"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c must be in"):
        pass_at_k(4, 5, 1)


def test_maj_at_k_hand_built_cases():
    # all n samples voting: "a" (correct) 3 votes vs "b" 2 votes -> 1
    assert maj_at_k(["a", "a", "a", "b", "b"], [1, 1, 1, 0, 0], 5) == 1.0
    # a two-way tie with the correct answer counts 1/2
    assert maj_at_k(["a", "a", "b", "b"], [1, 1, 0, 0], 4) == pytest.approx(0.5)
    # a three-way tie of singletons with one correct: 1/3
    assert maj_at_k(["a", "b", "c"], [1, 0, 0], 3) == pytest.approx(1 / 3)
    # unparsed samples abstain: "a" wins 1-0 among the voters
    assert maj_at_k(["a", None, None], [1, 0, 0], 3) == 1.0
    # nobody votes -> 0
    assert maj_at_k([None, None], [0, 0], 2) == 0.0
    # the wrong answer has the plurality
    assert maj_at_k(["a", "b", "b"], [1, 0, 0], 3) == 0.0
    # maj@1 = pass@1 = c / n
    assert maj_at_k(["a", "b", "b", None], [1, 0, 0, 0], 1) == pytest.approx(0.25)


def test_maj_at_k_matches_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(150):
        n = int(rng.integers(1, 10))
        keys = [[None, "a", "b", "c", "d"][i] for i in rng.integers(0, 5, size=n)]
        gold = ["a", "b", None][int(rng.integers(0, 3))]
        correct = [key is not None and key == gold for key in keys]
        k = int(rng.integers(1, n + 1))
        assert maj_at_k(keys, correct, k) == pytest.approx(
            brute_maj_at_k(keys, correct, k), abs=1e-12
        )


def test_maj_at_k_rejects_inconsistent_keys():
    with pytest.raises(ValueError, match="disagree"):
        maj_at_k(["a", "a"], [True, False], 1)
    with pytest.raises(ValueError, match="unparsed"):
        maj_at_k([None], [True], 1)
    with pytest.raises(ValueError, match="one entry per sample"):
        maj_at_k(["a"], [True, False], 1)


def test_evaluate_samples_means_over_problems():
    correct = [[1, 0, 0, 0], [1, 1, 0, 0]]
    keys = [["a", "b", "b", None], ["a", "a", "c", "d"]]
    metrics = evaluate_samples(correct, keys, ks=(2, 4))
    assert set(metrics) == {"eval/pass@1", "eval/pass@2", "eval/pass@4"} | {
        "eval/maj@1",
        "eval/maj@2",
        "eval/maj@4",
    }
    assert metrics["eval/pass@1"] == pytest.approx((0.25 + 0.5) / 2)
    assert metrics["eval/pass@2"] == pytest.approx((pass_at_k(4, 1, 2) + pass_at_k(4, 2, 2)) / 2)
    assert metrics["eval/maj@4"] == pytest.approx((0.0 + 1.0) / 2)
    with pytest.raises(ValueError, match="fewer than k=8"):
        evaluate_samples(correct, ks=(8,))
