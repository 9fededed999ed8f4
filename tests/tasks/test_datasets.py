"""The RLVR dataset: JSONL/Parquet loading, templates, seeded resumable order, splits, errors."""

import json

import pytest

from entropix.tasks.arithmetic import Problem
from entropix.tasks.datasets import MathDataset, load_records
from entropix.tasks.math_answers import Score

BOXED_TEMPLATE = (
    "{question}\nPlease reason step by step, and output the final answer within \\boxed{}."
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def gsm8k_rows(count):
    return [
        {"question": f"What is {i}+1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"}
        for i in range(count)
    ]


@pytest.fixture
def gsm8k(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(10))


def test_jsonl_fields_template_and_gold_extraction(tmp_path, gsm8k):
    data = MathDataset(gsm8k, template=BOXED_TEMPLATE, answer_format="gsm8k")
    assert len(data) == 10 and data.name == "math"
    problem = data.train_problems(0, 1)[0]
    assert isinstance(problem, Problem) and problem.numbers == ()
    number = int(problem.prompt.split("What is ")[1].split("+")[0])
    assert problem.answer == str(number + 1)
    assert data.question(problem) == problem.prompt
    assert problem.prompt == BOXED_TEMPLATE.replace("{question}", f"What is {number}+1?")
    assert problem.prompt.endswith("within \\boxed{}.")  # literal braces survive the template
    # custom, nested fields and MATH-style gold answers
    rows = [{"problem": "Half of one?", "meta": {"solution": "It is $\\boxed{\\frac{1}{2}}$."}}]
    path = write_jsonl(tmp_path / "math.jsonl", rows)
    data = MathDataset(path, question_field="problem", answer_field="meta.solution")
    assert data.train_problems(0, 1)[0].answer == "\\frac{1}{2}"  # "auto" found the box


def test_score_uses_the_math_verify_reward(gsm8k):
    data = MathDataset(gsm8k)
    problem = Problem("q", "0.5", ())
    assert data.score(problem, "so \\boxed{\\frac{1}{2}}") == Score(1.0, True, True)
    assert data.score(problem, "so \\boxed{1/3}") == Score(0.0, False, True)
    assert data.score(problem, "no idea") == Score(0.0, False, False)
    exact = MathDataset(gsm8k, verifier="exact")
    assert exact.score(problem, "\\boxed{1/2}") == Score(0.0, False, True)


def test_parquet_matches_jsonl(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = gsm8k_rows(7)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    from_parquet = MathDataset(tmp_path / "train.parquet", seed=3)
    from_jsonl = MathDataset(write_jsonl(tmp_path / "train.jsonl", rows), seed=3)
    assert from_parquet.train_problems(2, 5) == from_jsonl.train_problems(2, 5)


def test_order_is_seeded_permutations_that_resume(gsm8k):
    data = MathDataset(gsm8k, seed=1)
    size = len(data)
    stream = [p.prompt for step in range(7) for p in data.train_problems(step, 3)]  # 2.1 epochs
    every = sorted(p.prompt for p in data.train_problems(0, size))
    assert sorted(stream[:size]) == every  # epoch 0 is a permutation of the train split
    assert sorted(stream[size : 2 * size]) == every  # and so is epoch 1
    assert stream[:size] != stream[size : 2 * size]  # a fresh permutation per epoch
    # a pure function of (seed, step): a new object resumed at step 5 sees the same problems,
    # including step 3, which crosses the epoch boundary (items 9..11)
    resumed = MathDataset(gsm8k, seed=1)
    assert [p.prompt for p in resumed.train_problems(5, 3)] == stream[15:18]
    assert [p.prompt for p in resumed.train_problems(3, 3)] == stream[9:12]
    assert data.position(3, 3) == (0, 9) and data.position(4, 3) == (1, 2)
    # deterministic per seed, different across seeds
    assert MathDataset(gsm8k, seed=1).train_problems(0, size) == data.train_problems(0, size)
    assert MathDataset(gsm8k, seed=2).train_problems(0, size) != data.train_problems(0, size)


def test_splits_are_disjoint_and_fixed(tmp_path, gsm8k):
    data = MathDataset(gsm8k, eval_size=3, seed=0)
    other_seed = MathDataset(gsm8k, eval_size=3, seed=5)
    held_out = data.eval_problems()
    assert len(data) == 7 and data.num_eval == 3
    train = {p.prompt for p in data.train_problems(0, len(data))}
    assert train.isdisjoint(p.prompt for p in held_out)
    assert len(train | {p.prompt for p in held_out}) == 10
    assert held_out == other_seed.eval_problems()  # the split does not depend on the order seed
    order = [int(p.answer) for p in held_out]
    assert order == sorted(order)  # eval split in file order
    assert data.eval_problems(2) == held_out[:2]
    assert MathDataset(gsm8k, eval_fraction=0.2).num_eval == 2
    assert MathDataset(gsm8k).eval_problems() == []
    # a separate eval file
    eval_file = write_jsonl(tmp_path / "test.jsonl", gsm8k_rows(13)[10:])
    separate = MathDataset(gsm8k, eval_path=eval_file)
    assert len(separate) == 10 and [p.answer for p in separate.eval_problems()] == [
        "11",
        "12",
        "13",
    ]


def test_evaluate_reports_pass_and_majority(gsm8k):
    data = MathDataset(gsm8k)
    problems = [Problem("q1", "0.5", ()), Problem("q2", "3", ())]
    responses = [
        ["\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{0.25}", "junk"],  # correct cluster holds 2
        ["\\boxed{4}", "\\boxed{4.0}", "\\boxed{3}", "\\boxed{5}"],  # 4 and 4.0 form one cluster
    ]
    metrics = data.evaluate(problems, responses, ks=(4,))
    assert metrics["eval/pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert metrics["eval/pass@4"] == 1.0
    assert metrics["eval/maj@4"] == pytest.approx((1.0 + 0.0) / 2)
    assert metrics["eval/unparsed_frac"] == pytest.approx(1 / 8)


def write_text(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, content, kwargs, message",
    [
        ("empty.jsonl", "", {}, r"empty\.jsonl: empty data file"),
        ("blank.jsonl", "\n  \n", {}, r"blank\.jsonl: empty data file"),
        (
            "bad.jsonl",
            '{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n',
            {},
            r"bad\.jsonl:2: malformed JSON",
        ),
        (
            "noanswer.jsonl",
            '{"question": "a", "answer": "1"}\n\n{"question": "b", "solution": "2"}\n',
            {},
            r"noanswer\.jsonl:3: missing field 'answer'",
        ),
        (
            "null.jsonl",
            '{"question": null, "answer": "1"}\n',
            {},
            r"null\.jsonl:1: field 'question' is null",
        ),
        ("list.jsonl", "[1, 2]\n", {}, r"list\.jsonl:1: expected a JSON object"),
        (
            "nomark.jsonl",
            '{"question": "a", "answer": "#### 1"}\n{"question": "b", "answer": "2"}\n',
            {"answer_format": "gsm8k"},
            r"nomark\.jsonl:2: field 'answer' has no gsm8k answer",
        ),
        (
            "nobox.jsonl",
            '{"question": "a", "answer": "2"}\n',
            {"answer_format": "boxed"},
            r"nobox\.jsonl:1: field 'answer' has no boxed answer",
        ),
        ("data.csv", "question,answer\n", {}, r"data\.csv: unknown data file type"),
    ],
)
def test_bad_files_fail_at_construction_naming_file_and_line(
    tmp_path, name, content, kwargs, message
):
    path = write_text(tmp_path / name, content)
    with pytest.raises(ValueError, match=message) as info:
        MathDataset(path, **kwargs)
    assert "\n" not in str(info.value)  # one line


def test_bad_arguments_and_missing_files(tmp_path, gsm8k):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: no such data file"):
        MathDataset(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        MathDataset(gsm8k, eval_path=tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="answer_format='latex' is not one of"):
        MathDataset(gsm8k, answer_format="latex")
    with pytest.raises(ValueError, match=r"template must contain '\{question\}'"):
        MathDataset(gsm8k, template="Solve: {problem}")
    with pytest.raises(ValueError, match="not both"):
        MathDataset(gsm8k, eval_fraction=0.1, eval_size=2)
    with pytest.raises(ValueError, match="must leave train rows"):
        MathDataset(gsm8k, eval_size=10)


def test_bad_parquet_fails_naming_file_and_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"question": ["a", "b", None], "answer": ["1", "2", "3"]}), path)
    with pytest.raises(ValueError, match=r"rows\.parquet: row 2: field 'question' is null"):
        MathDataset(path)
    pq.write_table(pa.table({"question": ["a"], "solution": ["1"]}), path)
    with pytest.raises(ValueError, match=r"rows\.parquet: row 0: missing field 'answer'"):
        MathDataset(path)
    pq.write_table(
        pa.table({"question": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), path
    )
    with pytest.raises(ValueError, match=r"rows\.parquet: empty data file"):
        MathDataset(path)
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"rows\.parquet: not a readable Parquet file"):
        MathDataset(path)


def test_load_records_locations(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"question": "a", "answer": 7}])
    assert load_records(path) == [(f"{path}:1", "a", "7")]  # numbers are read as text
