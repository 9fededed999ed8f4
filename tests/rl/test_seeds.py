"""Seeds as one program: the JAX task equals the host task, a vmapped run equals its seeds run
alone, the run learns, and what it cannot run is refused on one line."""

import dataclasses

import jax
import numpy as np
import pytest

from entropix import tasks
from entropix.rl import Rollouts, SeedsProgram, run_seeds
from entropix.tasks.arithmetic import Problem
from entropix.tasks.jax_tasks import jax_task
from entropix.tasks.tokenizer import BOS, EOS, PAD
from tests.rl import tiny

SEEDS = (0, 1, 2)


def _config(*overrides, **sections):
    """The tiny RL config without the dynamics probe, with EOS required and a few held-out
    prompts (later ``overrides`` win)."""
    base = ("dynamics.every=0", "train.eval_prompts=3")
    return tiny.config(*base, *overrides, **{"rollout": {"require_eos": True}, **sections})


# Format reward on 1-digit addition: a random policy rarely ends a digit string with EOS, so
# the reward has room to rise within a few steps. Every stage of a run: warm-up, RL, evaluation.
LEARNING = (
    "task.digits=1",
    "task.format_coef=1.0",
    "rollout.prompts=4",
    "rollout.temperature=1.0",
    "train.steps=24",
    "optim.lr=3e-2",
    "sft.steps=20",
    "sft.batch_size=8",
    "sft.lr=1e-2",
    "train.eval_prompts=3",
)


@pytest.fixture(scope="module")
def config():
    return _config(*LEARNING)


@pytest.fixture(scope="module")
def result(config):
    return run_seeds(config, SEEDS)


def _host_problem(task, prompt: str) -> Problem:
    """The host task's problem of a prompt text (its own formatting, from the numbers)."""
    if isinstance(task, tasks.Addition):
        a, b = (int(x) for x in prompt[:-1].split("+"))
        return Problem(prompt, str(a + b), (a, b))
    values = tuple(int(x) for x in prompt[:-1].split(","))
    return Problem(prompt, ",".join(map(str, sorted(values))), values)


def _setup(task, new_tokens: int):
    codec = tasks.CharCodec()
    layout = tasks.layout_for(codec, task.train_problems(0, 256), new_tokens)
    return codec, layout, jax_task(task, codec, layout)


TASKS = {
    "addition": tasks.Addition(digits=2, format_coef=0.1),
    "addition 1 digit": tasks.Addition(digits=1, format_coef=0.5),
    "sorting": tasks.Sorting(length=3, format_coef=0.1),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_sampled_problems_are_encoded_as_the_host_codec_does(name):
    task = TASKS[name]
    codec, layout, jtask = _setup(task, task.max_answer_len() + 1)
    out = jax.device_get(jtask.sample(jax.random.PRNGKey(3), 64))
    problems = [_host_problem(task, codec.tokenizer.decode(row)) for row in out["prompt"]]
    prompt, prompt_mask = tasks.encode_prompts(codec, problems, layout)
    answer, answer_mask = tasks.encode_answers(codec, problems, layout)
    np.testing.assert_array_equal(out["prompt"], prompt)
    np.testing.assert_array_equal(out["prompt_mask"], prompt_mask)
    np.testing.assert_array_equal(out["answer"], answer)
    np.testing.assert_array_equal(out["answer_mask"], answer_mask)
    for row, problem in zip(out["target"], problems, strict=True):
        assert codec.tokenizer.decode(row) == problem.answer
    if isinstance(task, tasks.Addition):  # operands cover their range, leading zeros dropped
        numbers = np.asarray([p.numbers for p in problems])
        assert numbers.min() < 10 and numbers.max() >= 10**task.digits // 2


def _edge_rows(task, codec, problem, width: int) -> list[list[int]]:
    """Replies the host must score in every way: right, right but cut / without EOS / with
    specials inside, wrong, malformed, empty, overlong."""
    enc = codec.tokenizer.encode
    answer = enc(problem.answer)
    texts = ["-5", "-", "", "5-", "12", "0", "1,2,3", "1,,2", ",1", "1,", "12,3", "3,", "+"]
    rows = [answer + [EOS], answer, answer[:-1] + [EOS], [BOS] + answer + [EOS]]
    rows += [answer[:1] + [PAD] + answer[1:] + [EOS], answer + [EOS] + enc("99")]
    rows += [enc(t) + [EOS] for t in texts] + [enc(t) for t in texts]
    rows += [enc("1" * width), enc("9" * (width - 1)) + [EOS]]
    return [(r + [PAD] * width)[:width] for r in rows]


TASK_SECTIONS = {
    "addition": {"name": "addition", "digits": 2, "format_coef": 0.1},
    "sorting": {"name": "sorting", "length": 3, "format_coef": 0.1},
}


@pytest.mark.parametrize("name", sorted(TASK_SECTIONS))
def test_jax_reward_equals_the_host_reward(name):
    """A random policy's replies (from the program's own rollout), random id strings over the
    task's characters and the edge cases, scored on device and by the trainer's host path
    (``Rollouts._score``: decode, ``task.score``, the ``require_eos`` rule), either rule."""
    task = tasks.make_task(**TASK_SECTIONS[name])
    width = task.max_answer_len() + 2
    program = SeedsProgram(_config(f"rollout.max_new_tokens={width}", task=TASK_SECTIONS[name]))
    codec, jtask = program.plan.policy.codec, program.task
    batch = jax.device_get(jax.jit(program.rollout)(program.initial_state(0), 0, 0))
    prompts = [codec.tokenizer.decode(row) for row in batch["prompt"]]
    sampled = [_host_problem(task, text) for text in prompts]
    rng = np.random.default_rng(0)
    alphabet = codec.tokenizer.encode("0123456789,-+") + [EOS, EOS, PAD, BOS]
    rows = [batch["response"], rng.choice(alphabet, size=(64, width))]
    problems = sampled + [sampled[i % len(sampled)] for i in range(64)]
    for problem in sampled[:: program.config.rollout.group_size]:
        edge = _edge_rows(task, codec, problem, width)
        rows.append(np.asarray(edge))
        problems += [problem] * len(edge)
    tokens = np.concatenate(rows).astype(np.int32)
    target = np.asarray(
        [(codec.tokenizer.encode(p.answer) + [PAD] * width)[: jtask.answer_len] for p in problems]
    )
    for require_eos in (True, False):
        config = dataclasses.replace(program.config.rollout, require_eos=require_eos)
        rollouts = Rollouts(task, codec, program.plan.policy.layout, config, program.mesh)
        host = rollouts._score(problems, tokens)
        device = jax.device_get(jtask.score(tokens, target, require_eos))
        for key in ("rewards", "correct", "parsed", "ended"):
            np.testing.assert_array_equal(device[key], host[key], err_msg=f"{key} {require_eos}")
            if require_eos:  # the program's own batch was scored the same way
                np.testing.assert_array_equal(batch[key], host[key][: len(sampled)])
        # the check can fail: the cases cover right and wrong, formed and not, ended and not
        for key in ("correct", "parsed", "ended"):
            assert 0 < host[key].mean() < 1, key


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=5e-4, atol=1e-5)


def test_each_seed_of_the_vmapped_program_is_that_seed_run_alone(config, result):
    program = SeedsProgram(config)
    i, seed = 1, SEEDS[1]
    state, out = jax.device_get(jax.jit(program.run_one)(program.initial_state(seed), seed))
    for name, values in out["metrics"].items():
        _close(values, result.metrics[name][i])
    for name, values in out["sft"].items():
        _close(values, result.sft[name][i])
    alone = program.evaluation(jax.tree.map(lambda x: x[None], out["eval"]))
    for name, values in alone.items():
        _close(values[0], result.evaluation[name][i])
    jax.tree.map(lambda a, b: _close(a, b[i]), state.params, jax.device_get(result.state.params))
    # the seeds differ: other initial weights, other problems and samples
    entropy = result.metrics["entropy"]
    assert entropy.shape == (len(SEEDS), config.train.steps)
    assert not np.allclose(entropy[0], entropy[1])


def test_seed_states_are_the_trainers_seeded_init(config):
    from entropix.train import init_state

    program = SeedsProgram(config)
    plan = program.plan
    _, _, create = init_state(plan.policy.model_fn, plan.optimizer, program.mesh, seed=2)
    expected = jax.device_get(create().params)
    stacked = jax.device_get(program.initial_states(SEEDS).params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[2]), expected, stacked)


def test_a_short_run_learns(result):
    """The warm-up loss falls and GRPO raises the format reward (about 0.6 -> 1.0)."""
    sft = result.sft["loss"]
    assert sft.shape == (len(SEEDS), 20) and np.all(sft[:, -4:].mean(1) < sft[:, :4].mean(1) - 1)
    reward = result.metrics["reward"]
    first, last = reward[:, :4].mean(axis=1), reward[:, -4:].mean(axis=1)
    assert np.all(last > first) and last.mean() > first.mean() + 0.2, reward


def test_evaluation_reports_the_trainers_figures(config, result):
    """Greedy accuracy per seed from the run; pass@k / maj@k of sampled replies equal the
    trainer's (``task.evaluate`` on the decoded replies, unended ones read as empty)."""
    assert set(result.evaluation) == {"eval/accuracy"}
    accuracy = result.evaluation["eval/accuracy"]
    assert accuracy.shape == (len(SEEDS),) and np.all((accuracy >= 0) & (accuracy <= 1))
    sampled = _config(*LEARNING, "train.eval_samples=4", "train.eval_k=[1, 2, 4]")
    program = SeedsProgram(sampled)
    task, codec = program.plan.task, program.plan.policy.codec
    enc = codec.tokenizer.encode
    problems = [Problem("3+4=", "7", (3, 4)), Problem("9+9=", "18", (9, 9))]
    replies = [["7", "7", "8", "-"], ["18", "1", "1", "x1"]]
    ended = [[True, False, True, True], [True, True, True, True]]
    tokens = [
        (enc(r) + [EOS] * e + [PAD] * 3)[:3]
        for rs, es in zip(replies, ended, strict=True)
        for r, e in zip(rs, es, strict=True)
    ]
    target = [(enc(p.answer) + [PAD] * 2)[:2] for p in problems for _ in range(4)]
    out = program.replies(np.asarray(tokens, np.int32), np.asarray(target, np.int32))
    stacked = jax.tree.map(lambda x: np.asarray(x)[None], {"correct": np.zeros(2), "sampled": out})
    figures = program.evaluation(stacked)
    decoded = [
        [r if e else "" for r, e in zip(rs, es, strict=True)]
        for rs, es in zip(replies, ended, strict=True)
    ]
    expected = task.evaluate(problems, decoded, (1, 2, 4))
    assert set(figures) == {"eval/accuracy", *expected}
    for name, value in expected.items():
        np.testing.assert_allclose(figures[name][0], value, err_msg=name)
    assert 0 < expected["eval/maj@2"] < expected["eval/pass@2"] < 1


def test_written_seeds_read_back_as_runs(result, tmp_path):
    from entropix.runs import metrics_table, summarize

    dirs = result.write(tmp_path)
    assert [d.name for d in dirs] == [f"seed{s}" for s in SEEDS]
    for i, directory in enumerate(dirs):
        table = metrics_table(directory)
        np.testing.assert_array_equal(table["step"], np.arange(1, 25))
        np.testing.assert_allclose(table["entropy"], result.metrics["entropy"][i], rtol=1e-6)
        assert np.isnan(table["eval/accuracy"][:-1]).all()
        assert table["eval/accuracy"][-1] == pytest.approx(result.evaluation["eval/accuracy"][i])
        final = summarize(directory, last=5)["final_reward"]
        assert final == pytest.approx(result.metrics["reward"][i, -5:].mean())


REFUSED = {
    "no JAX reward": (["task.name=countdown"], "has no JAX reward"),
    "dynamics probe": (["dynamics.every=1"], "does not run the dynamics probe"),
    "a second sampled batch": (
        ["loss.terms.1={name: aepo}", "controllers=[{name: aepo_temperature}]"],
        "sampled at a controller's temperature (aepo_temperature)",
    ),
    "answer marker": (["rollout.answer_marker=x"], "rollout.answer_marker must be empty"),
    "steering": (["rollout.steering={name: east}"], "rollout.steering probes and steers"),
    "warm-up answers cut": (["sft.steps=2"], "raise rollout.max_new_tokens"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsupported_configs_are_refused_on_one_line(case):
    overrides, message = REFUSED[case]
    with pytest.raises(ValueError) as error:
        SeedsProgram(_config(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_a_task_subclass_or_chat_codec_has_no_jax_reward():
    layout = tasks.Layout(9, 4)
    with pytest.raises(ValueError, match="'addition' \\(EvenSum\\) has no JAX reward"):
        jax_task(tiny.EvenSum(), tasks.CharCodec(), layout)
    with pytest.raises(ValueError, match="needs the character codec"):
        jax_task(tasks.Addition(), object(), layout)
