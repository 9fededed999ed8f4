"""Answer extraction on hand-written GSM8K / MATH strings and the math-verify reward."""

import threading

import pytest

from entropix.tasks.math_answers import (
    Score,
    cluster_answers,
    exact_equal,
    extract_answer,
    extract_boxed,
    extract_gsm8k,
    math_equal,
    normalize_answer,
    score_metrics,
    score_response,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("$\\boxed{\\left\\{1, 2\\right\\}}$", "\\left\\{1, 2\\right\\}"),  # escaped braces
        ("\\boxed{a_{1}^{2} + \\sqrt{b_{2}}} then", "a_{1}^{2} + \\sqrt{b_{2}}"),
        ("first \\boxed{1}, then \\boxed{2}, finally \\boxed{3}", "3"),  # several -> last
        ("the answer is $\\boxed 5$.", "5"),
        ("\\boxed 7.", "7"),
        ("\\fbox{9}", "9"),
        ("\\boxed{1} and \\fbox{x+1}", "x+1"),
        ("\\boxed { 12 }", "12"),
        ("no box here", None),
        ("\\boxed{}", None),  # empty
        ("\\boxed{3} and then \\boxed{\\frac{1}{2", None),  # the last box is truncated
        ("\\boxedsomething{3}", None),  # not the command
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
        ("#### 1,000", "1000"),
        ("#### 1,234,567.", "1234567"),
        ("#### -3.5\n", "-3.5"),
        ("#### 5\nmore text\n#### 6", "6"),  # last marker
        ("####", None),
        ("no marker 42", None),
    ],
)
def test_extract_gsm8k(text, expected):
    assert extract_gsm8k(text) == expected


def test_extract_answer_formats():
    assert extract_answer("x \\boxed{2} #### 3", "boxed") == "2"
    assert extract_answer("x \\boxed{2} #### 3", "gsm8k") == "3"
    assert extract_answer("x \\boxed{2} #### 3", "auto") == "2"  # boxed first
    assert extract_answer("steps\n#### 3", "auto") == "3"
    assert extract_answer("  $17$ ", "plain") == "17"
    # "auto" on a response without a marked answer is unparsed; on a gold answer it is the text
    assert extract_answer("the answer is 17", "auto") is None
    assert extract_answer("17", "auto", plain_fallback=True) == "17"
    with pytest.raises(ValueError, match="answer_format='latex'"):
        extract_answer("17", "latex")


def test_normalize_answer():
    assert normalize_answer(" $1,000.$ ") == "1000"
    assert normalize_answer("12,34") == "12,34"  # not a thousands separator
    assert normalize_answer("(1, 2)") == "(1, 2)"


@pytest.mark.parametrize(
    "gold, pred",
    [
        ("1/2", "0.5"),
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("\\frac12", "1/2"),
        ("1000", "1,000"),
        ("3", "3.0"),
        ("3", "x=3"),  # documented: an assignment is compared by its right-hand side
        ("x=3", "3"),
        ("(x+1)^2", "x^2+2x+1"),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
        ("\\pi", "3.14159265"),  # numeric comparison at 6 decimals
        ("18", "\\$18"),
    ],
)
def test_math_equal_accepts_equivalent(gold, pred):
    assert math_equal(gold, pred)


@pytest.mark.parametrize(
    "gold, pred",
    [("2", "3"), ("1/3", "0.33"), ("\\frac{1}{2}", "\\frac{1}{3}"), ("5", "five"), ("4", "")],
)
def test_math_equal_rejects_different(gold, pred):
    assert not math_equal(gold, pred)


def test_exact_equal():
    assert exact_equal("1000", "$1,000$")
    assert not exact_equal("0.5", "1/2")


def test_score_response_and_unparsed():
    assert score_response("42", "so \\boxed{42}") == Score(1.0, True, True)
    assert score_response("42", "so \\boxed{41}") == Score(0.0, False, True)
    assert score_response("42", "I do not know") == Score(0.0, False, False)
    assert score_response("42", "\\boxed{\\frac{") == Score(0.0, False, False)
    assert score_response("1/2", "\\boxed{0.5}", verifier="exact") == Score(0.0, False, True)
    # garbage inside a box is parsed-but-wrong, never an exception
    for junk in ["\\boxed{\\frac{}{}}", "\\boxed{)))(((}", "\\boxed{" + "x^" * 400 + "}"]:
        assert score_response("1", junk).reward == 0.0


def test_math_equal_in_a_thread_does_not_raise():
    """math-verify's signal timeout fails outside the main thread; ours must not."""
    results, errors = [], []

    def work():
        try:
            results.append(math_equal("\\frac{1}{2}", "0.5"))
            results.append(math_equal("2", "3"))
            results.append(score_response("7", "\\boxed{7.0}").correct)
        except BaseException as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors
    assert results == [True, False, True]


def test_score_metrics():
    scores = [Score(1.0, True, True), Score(0.0, False, True), Score(0.0, False, False)]
    metrics = score_metrics(scores)
    assert metrics["reward/mean"] == pytest.approx(1 / 3)
    assert metrics["reward/accuracy"] == pytest.approx(1 / 3)
    assert metrics["reward/unparsed"] == 1.0
    assert metrics["reward/unparsed_frac"] == pytest.approx(1 / 3)


def test_cluster_answers():
    ids = cluster_answers(["0.5", None, "1/2", "3", "\\frac{1}{2}", "3.0"], math_equal)
    assert ids == [0, None, 0, 1, 0, 1]
    assert cluster_answers(["0.5", "1/2", "0.5"]) == [0, 1, 0]  # exact by default


def test_fractional_timeout_is_rounded_up_not_silently_failing():
    assert math_equal("1/2", "0.5", timeout_seconds=0.5)
    assert math_equal("1/2", "0.5", timeout_seconds=None)
