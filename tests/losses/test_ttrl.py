"""Label-free test-time RL: TTRL and EVOL-RL majority rewards and ETTRL's EAR against numpy
references written from the formulas (plain loops over groups)."""

import dataclasses
from collections import Counter

import jax.numpy as jnp
import numpy as np
import pytest

from entropix.config import MethodSpec
from entropix.losses import ettrl_ear, evol_rl_rewards, majority_mask, ttrl_rewards
from entropix.rl import AdvantageStage
from entropix.tasks import Addition, MathDataset


def _majority_ref(answers, groups):
    """Per row: answer equals its group's most common answer (ties: first seen)."""
    out = np.zeros(len(answers), bool)
    for g in set(groups.tolist()):
        rows = [i for i in range(len(answers)) if groups[i] == g and answers[i] >= 0]
        if not rows:
            continue
        top, _ = Counter(answers[i] for i in rows).most_common(1)[0]  # insertion order on ties
        for i in rows:
            out[i] = answers[i] == top
    return out


def _case(seed=0, rows=24, groups=4):
    rng = np.random.default_rng(seed)
    answers = rng.integers(-1, 3, size=rows).astype(np.int32)
    group_ids = rng.permutation(np.repeat(np.arange(groups), rows // groups)).astype(np.int32)
    return answers, group_ids


def test_ref_ttrl():
    for seed in range(5):
        answers, groups = _case(seed)
        got = np.asarray(ttrl_rewards(jnp.asarray(answers), jnp.asarray(groups)))
        np.testing.assert_array_equal(got, _majority_ref(answers, groups).astype(np.float32))
    # hand case: a tie between 7 and 5 goes to 7 (seen first); -1 never votes
    answers = jnp.asarray([7, 5, 5, 7, -1, -1, -1, 2], jnp.int32)
    groups = jnp.asarray([0, 0, 0, 0, 1, 1, 1, 1], jnp.int32)
    np.testing.assert_array_equal(ttrl_rewards(answers, groups), [1, 0, 0, 1, 0, 0, 0, 1])
    # the answer ids' values do not matter, only their equality
    np.testing.assert_array_equal(
        majority_mask(answers * 3 + 1 * (answers >= 0), groups), majority_mask(answers, groups)
    )


def test_ttrl_refuses_float_answers():
    with pytest.raises(TypeError, match="answers must be integer"):
        ttrl_rewards(jnp.zeros(4), jnp.zeros(4, jnp.int32))


def _evol_ref(answers, groups, tokens, mask, alpha, buckets):
    b = len(answers)
    emb = np.zeros((b, buckets))
    for i in range(b):
        for t in range(tokens.shape[1]):
            if mask[i, t]:
                emb[i, tokens[i, t] % buckets] += 1
        norm = np.linalg.norm(emb[i])
        emb[i] = emb[i] / norm if norm > 0 else emb[i]
    major = _majority_ref(answers, groups)
    novelty = np.zeros(b)
    for i in range(b):
        sims = [emb[i] @ emb[j] for j in range(b) if j != i and groups[j] == groups[i]]
        novelty[i] = 1 - (alpha * np.mean(sims) + (1 - alpha) * np.max(sims)) if sims else 1.0
    out = np.full(b, -1.0)
    for i in range(b):
        if answers[i] < 0:
            continue
        side = [
            j
            for j in range(b)
            if groups[j] == groups[i] and answers[j] >= 0 and major[j] == major[i]
        ]
        lo, hi = min(novelty[side]), max(novelty[side])
        scaled = (novelty[i] - lo) / (hi - lo) if hi - lo > 1e-12 else 0.5
        out[i] = (0.5 if major[i] else -1.0) + 0.5 * scaled
    return out


def test_ref_evol_rl():
    rng = np.random.default_rng(3)
    answers, groups = _case(3, rows=16, groups=2)
    tokens = rng.integers(0, 9, size=(16, 6)).astype(np.int32)
    mask = rng.random((16, 6)) < 0.8
    mask[:, 0] = True
    for alpha, buckets in ((0.5, 4096), (0.2, 5)):
        got = evol_rl_rewards(
            jnp.asarray(answers),
            jnp.asarray(groups),
            jnp.asarray(tokens),
            jnp.asarray(mask),
            alpha=alpha,
            buckets=buckets,
        )
        want = _evol_ref(answers, groups, tokens, mask, alpha, buckets)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
        major = _majority_ref(answers, groups)
        got = np.asarray(got)
        # selection: every majority reply scores above every other reply of its group
        for g in range(2):
            inside, outside = got[(groups == g) & major], got[(groups == g) & ~major]
            assert inside.min() >= 0.5 and outside.max() <= -0.5
    with pytest.raises(ValueError, match="alpha must be in"):
        evol_rl_rewards(jnp.asarray(answers), jnp.asarray(groups), tokens, mask, alpha=1.5)


def test_ref_ettrl_ear():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(3), 4).astype(np.int32)
    metric = rng.random(12).astype(np.float32) + 0.1
    metric[8:] = 0.0  # a group of zero-entropy replies keeps its advantages
    advantages = rng.normal(size=12).astype(np.float32)
    got = np.asarray(ettrl_ear(jnp.asarray(advantages), jnp.asarray(metric), jnp.asarray(groups)))
    want = advantages.copy()
    for i in range(12):
        mean = metric[groups == groups[i]].mean()
        w = np.clip(metric[i] / mean, 0.5, 1.5) if mean > 0 else 1.0
        if advantages[i] > 0:
            want[i] = w * advantages[i]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # token-level advantages [B, N] are scaled per row
    tokens = np.repeat(advantages[:, None], 3, axis=1)
    got2 = ettrl_ear(jnp.asarray(tokens), jnp.asarray(metric), jnp.asarray(groups))
    np.testing.assert_allclose(np.asarray(got2), np.repeat(want[:, None], 3, axis=1), rtol=1e-6)
    with pytest.raises(ValueError, match="0 < low <= 1 <= high"):
        ettrl_ear(jnp.asarray(advantages), jnp.asarray(metric), jnp.asarray(groups), low=1.2)


def test_label_free_advantages_do_not_read_the_task_reward():
    answers, groups = _case(4, rows=16, groups=2)
    rng = np.random.default_rng(0)
    inputs = {
        "group_ids": jnp.asarray(groups),
        "mask": jnp.ones((16, 3)),
        "entropy": jnp.asarray(rng.random((16, 3)), jnp.float32),
        "tokens": jnp.asarray(rng.integers(0, 9, (16, 3)), jnp.int32),
        "answer_mask": jnp.ones((16, 3), bool),
        "answers": jnp.asarray(answers),
    }
    for reward in ("ttrl", "evol_rl"):
        stage = AdvantageStage((MethodSpec(reward),), (MethodSpec("grpo"),))
        assert stage.answers
        one = stage({**inputs, "rewards": jnp.asarray(rng.random(16), jnp.float32)})
        two = stage({**inputs, "rewards": jnp.zeros(16)})
        for a, b in zip(one, two, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_reward_source_must_come_first():
    with pytest.raises(ValueError, match="loss.rewards.1: ttrl replaces the task reward"):
        AdvantageStage((MethodSpec("pear"), MethodSpec("ttrl")), (MethodSpec("grpo"),))


def test_answers_are_extracted_without_the_label(tmp_path):
    task = Addition(digits=2)
    problem = task.train_problems(0, 1)[0]
    wrong = dataclasses.replace(problem, answer="-1")
    for p in (problem, wrong):
        assert task.answer(p, "46") == "46" and task.answer(p, "4+6") is None
    path = tmp_path / "data.jsonl"
    path.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    data = MathDataset(path)
    row = data.train_problems(0, 1)[0]
    assert data.answer(row, r"so \boxed{1,000}.") == "1000"
    assert data.answer(dataclasses.replace(row, answer="7"), r"\boxed{3}") == "3"
    assert data.answer(row, "no answer here") is None
