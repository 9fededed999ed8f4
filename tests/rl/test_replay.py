"""The SPEAR replay buffer: recalibrated sampling against numpy, staleness, FIFO capacity, and
exact resume of the replayed batches from the per-step snapshots."""

import jax
import numpy as np
import pytest

from entropix import rl
from entropix.losses import ReplaySettings
from entropix.rl.replay import ReplayBuffer, ReplayData
from entropix.rl.rollout import to_global
from entropix.tasks.tokenizer import ALPHABET
from entropix.train import make_mesh, read_metrics
from tests.rl import tiny

P, N, ROWS = 3, 4, 6


def rollout(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    return {
        "prompt": rng.integers(1, 9, (ROWS, P)).astype(np.int32),
        "prompt_mask": np.ones((ROWS, P), bool),
        "response": rng.integers(1, 9, (ROWS, N)).astype(np.int32),
        "response_mask": rng.uniform(size=(ROWS, N)) > 0.2,
        "rollout_logp": rng.normal(-1, 0.2, (ROWS, N)).astype(np.float32),
        "rewards": rng.choice([0.0, 1.0, 2.0], ROWS, p=[0.6, 0.3, 0.1]).astype(np.float32),
    }


def test_sampled_advantages_are_reward_minus_the_median_of_recent_rewards():
    settings = ReplaySettings(capacity=8, tolerate_steps=5, baseline_size=10, min_reward=1.0)
    buffer = ReplayBuffer(settings, P, N)
    seen = []
    for step in range(3):
        batch = rollout(step)
        buffer.insert(step, batch)
        seen += batch["rewards"].tolist()
    median = np.median(seen[-10:])
    assert buffer.baseline() == median
    out = buffer.sample(np.random.default_rng(0), rows=5)
    stored = buffer.arrays["reward"][buffer.arrays["filled"]]
    candidates = [r - median for r in stored if r - median > 0]
    drawn = min(5, len(candidates))
    assert drawn > 0
    np.testing.assert_allclose(out["advantages"][drawn:], 0.0)
    assert set(out["advantages"][:drawn].tolist()) <= set(candidates)
    assert out["prompt_mask"][:drawn].all() and not out["prompt_mask"][drawn:].any()
    assert not out["response_mask"][drawn:].any()


def test_stale_entries_drop_and_the_ring_keeps_the_newest():
    settings = ReplaySettings(capacity=3, tolerate_steps=1, baseline_size=4, min_reward=1.0)
    buffer = ReplayBuffer(settings, P, N)
    wins = {"rewards": np.ones(ROWS, np.float32)}
    for step in range(2):
        buffer.insert(step, {**rollout(step), **wins})
    assert len(buffer) == 3  # capacity: the newest three of twelve wins
    np.testing.assert_array_equal(buffer.arrays["born"], [1, 1, 1])
    buffer.drop_stale(3)  # born at 1 < 3 - 1
    assert len(buffer) == 0


def test_resumed_run_replays_exactly_what_the_straight_run_replayed(tmp_path):
    mesh = make_mesh(1, 1, 1)

    def rollouts(position, state):
        return {k: to_global(v, mesh) for k, v in rollout(position).items()}

    settings = ReplaySettings(capacity=16, tolerate_steps=2, baseline_size=8, min_reward=1.0)
    kwargs = dict(prompt_len=P, new_tokens=N, seed=0, every=2, keep=1)

    def replayed(directory, positions):
        data = ReplayData(rollouts, settings, directory, mesh, **kwargs)
        return [{k: np.asarray(v) for k, v in data(p, None)["replay"].items()} for p in positions]

    straight = replayed(tmp_path / "a", range(6))
    replayed(tmp_path / "b", range(4))  # "crashes" after step 4; resumes from checkpoint 4
    resumed = replayed(tmp_path / "b", range(4, 6))
    for a, b in zip(straight[4:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(r["response_mask"].any() for r in straight), "nothing was ever replayed"
    assert sorted(p.name for p in (tmp_path / "a").glob("*.npz")) == ["6.npz"]
    with pytest.raises(FileNotFoundError, match="cannot resume the SPEAR replay buffer"):
        replayed(tmp_path / "c", [3])


def test_spear_alone_is_refused_at_build():
    config = tiny.config(loss={"terms": [{"name": "spear"}]})
    with pytest.raises(ValueError, match="spear replays past wins next to an on-policy term"):
        rl.build(config, task=tiny.EvenSum(seed=0))


class ThirdSum(tiny.EvenSum):
    """Reward 1 when the reply's alphabet places sum to a multiple of 3: wins are a minority,
    so the P50 baseline stays below 1 and the wins are replayed."""

    def score(self, problem, response: str):
        score = super().score(problem, response)
        hit = sum(ALPHABET.index(ch) for ch in response) % 3 == 0
        return type(score)(float(hit), hit, True)


def spear_config(steps: int):
    spear = {"name": "spear", "ramp_steps": 1, "clip_cov_ratio": None}
    return tiny.config(
        f"train.steps={steps}",
        "train.checkpoint_every=2",
        loss={"terms": [{"name": "ppo_clip"}, spear]},
    )


def test_the_trainer_replays_past_wins_and_trains_on_them(tmp_path):
    plan = rl.build(spear_config(3), task=ThirdSum(seed=0))
    rl.run(plan, tmp_path)
    rows = read_metrics(tmp_path)
    wins = 0.0  # earlier steps' wins, in units of a batch (accuracy = wins / rows)
    for row in rows:
        assert row["replay/fraction"] == pytest.approx(min(wins, 1.0))
        wins += row["accuracy"]
    last = rows[-1]
    assert last["replay/fraction"] > 0, rows  # the seed's second step wins
    assert last["replay/advantage"] == pytest.approx(1.0)  # the median reward is still 0
    assert last["spear/weight"] == 1.0 and last["spear/loss"] < 0


@pytest.mark.slow
def test_a_resumed_spear_run_ends_where_the_straight_run_ends(tmp_path):
    straight = rl.run(rl.build(spear_config(4), task=ThirdSum(seed=0)), tmp_path / "a")
    rl.run(rl.build(spear_config(2), task=ThirdSum(seed=0)), tmp_path / "b")
    resumed = rl.run(rl.build(spear_config(4), task=ThirdSum(seed=0)), tmp_path / "b")
    assert resumed.resumed_from == 2
    leaves = zip(
        jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params), strict=True
    )
    for a, b in leaves:
        np.testing.assert_array_equal(a, b)
