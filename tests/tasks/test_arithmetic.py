import numpy as np
import pytest

from entropix.tasks import (
    Addition,
    CharTokenizer,
    Countdown,
    Sorting,
    make_task,
    pad_batch,
    reward,
    rewards,
)


@pytest.mark.parametrize("name", ["addition", "countdown", "sorting"])
def test_generators_are_seeded_and_canonical_answers_score_full(name):
    task = make_task(name, format_coef=0.5)
    a = task.sample(np.random.default_rng(3), 20)
    b = task.sample(np.random.default_rng(3), 20)
    assert a == b and len(a) == 20
    assert (rewards(task, a, [p.answer for p in a]) == 1.5).all()
    tok = CharTokenizer()
    for p in a:  # every prompt and answer is spelled in the tokenizer alphabet
        assert (
            tok.decode(tok.encode(p.prompt + p.answer, bos=True, eos=True)) == p.prompt + p.answer
        )
        assert len(p.answer) <= task.max_answer_len()
        assert str(p.numbers[0]) in task.question(p)  # the chat-model wording names the data


def test_addition_reference():
    task = Addition(digits=2)
    for p in task.sample(np.random.default_rng(0), 50):
        x, y = map(int, p.prompt[:-1].split("+"))
        assert p.answer == str(x + y)
    p = task.sample(np.random.default_rng(0), 1)[0]
    assert reward(task, p, p.answer + "0") == 0.0
    assert reward(Addition(format_coef=0.1), p, "7") == pytest.approx(0.1 * (p.answer != "7"))
    assert reward(task, p, p.answer, ended=False) == 0.0  # unterminated: no reward


def test_sorting_reference():
    task = Sorting(length=5)
    for p in task.sample(np.random.default_rng(1), 30):
        digits = [int(c) for c in p.prompt[:-1].split(",")]
        assert p.answer == ",".join(map(str, sorted(digits)))
    assert not task.well_formed(p, "1,,2") and task.well_formed(p, "1,2")


def test_countdown_verifier():
    task = Countdown(count=3)
    for p in task.sample(np.random.default_rng(2), 30):
        assert eval(p.answer) == p.target  # noqa: S307 - reference check on generated digits
        assert p.prompt == f"{','.join(map(str, p.numbers))}={p.target}:"
    p = task.sample(np.random.default_rng(2), 1)[0]
    n = p.numbers
    assert not task.correct(p, f"{n[0]}*{n[0]}*{n[0]}*{n[0]}")  # reuses a number too often
    assert not task.correct(p, "__import__('os')") and not task.well_formed(p, "1/0")
    assert not task.well_formed(p, "2**3")


def test_tokenizer_and_padding():
    tok = CharTokenizer()
    ids = tok.encode("12+3=", bos=True)
    assert ids[0] == tok.bos_id and tok.decode(ids + [tok.eos_id, 5]) == "12+3="
    assert tok.ended(ids + [tok.eos_id]) and not tok.ended(ids)
    with pytest.raises(ValueError, match="not in the tokenizer alphabet"):
        tok.encode("A")
    x, m = pad_batch([[5, 6], [7]], left=True)
    np.testing.assert_array_equal(x, [[5, 6], [0, 7]])
    np.testing.assert_array_equal(m, [[True, True], [False, True]])
    with pytest.raises(ValueError, match="longer than"):
        pad_batch([[1, 2, 3]], length=2)
    with pytest.raises(ValueError, match="task='nope'"):
        make_task("nope")
