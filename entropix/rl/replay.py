"""The SPEAR replay buffer: successful trajectories kept on the host across steps and resumes.

:class:`ReplayBuffer` holds, in fixed-size numpy arrays, the prompt / response tokens, masks
and behaviour log-probs of past responses whose reward reached ``min_reward`` (a FIFO ring of
``capacity`` rows; entries older than ``tolerate_steps`` steps are dropped), and a window of the
last ``baseline_size`` rollout rewards whose median is the recalibration baseline.

:class:`ReplayData` wraps the rollout stage (the ``data`` function of ``entropix.train.fit``):
for step t it takes the rollout batch, draws ``batch["replay"]`` from the buffer as it stood
before step t (rows with recalibrated advantage R - P50 > 0, uniformly, seeded by (seed, t);
as many rows as the rollout batch, padding rows fully masked), then adds step t's wins and
rewards. The buffer after step t is written to ``<run_dir>/replay/<t + 1>.npz`` (process 0),
and a run resumed at step s reads ``<s>.npz``, so it replays exactly what the uninterrupted run
replayed. Snapshots are kept for the newest ``keep`` checkpoint steps (multiples of
``every``) and the latest step; the others are deleted.
"""

from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from entropix.losses.spear import ReplaySettings
from entropix.rl.rollout import Rollouts, to_global, to_host
from entropix.train.state import TrainState

REPLAY_STREAM = 4  # the seed stream of replay sampling (rollouts use 2, sampled eval 3)
TOKENS = ("prompt", "prompt_mask", "response", "response_mask")


class ReplayBuffer:
    """Host-side buffer of successful trajectories and recent rewards (see module docstring)."""

    def __init__(self, settings: ReplaySettings, prompt_len: int, new_tokens: int) -> None:
        c, d = settings.capacity, settings.baseline_size
        self.settings = settings
        self.arrays = {
            "prompt": np.zeros((c, prompt_len), np.int32),
            "prompt_mask": np.zeros((c, prompt_len), bool),
            "response": np.zeros((c, new_tokens), np.int32),
            "response_mask": np.zeros((c, new_tokens), bool),
            "old_logp": np.zeros((c, new_tokens), np.float32),
            "reward": np.zeros((c,), np.float32),
            "born": np.zeros((c,), np.int32),
            "filled": np.zeros((c,), bool),
            "baseline": np.zeros((d,), np.float32),
            # cursor of the trajectory ring, cursor and fill of the baseline window
            "counters": np.zeros((3,), np.int64),
        }

    def __len__(self) -> int:
        return int(np.sum(self.arrays["filled"]))

    def baseline(self) -> float:
        """P50 of the recent rewards (NaN before any reward was seen).

        Returns:
            The median of the last ``baseline_size`` rollout rewards, or NaN when none.
        """
        seen = int(self.arrays["counters"][2])
        return float(np.median(self.arrays["baseline"][:seen])) if seen else float("nan")

    def drop_stale(self, step: int) -> None:
        """Forget trajectories added more than ``tolerate_steps`` steps before ``step``.

        Args:
            step: the trainer step about to be taken (0-based).
        """
        a = self.arrays
        a["filled"] &= a["born"] >= step - self.settings.tolerate_steps

    def sample(self, rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
        """``rows`` replay rows with recalibrated advantages; unfilled rows are all-masked.

        Args:
            rng: the generator of the uniform draw (without replacement) among the rows with
                recalibrated advantage R - P50 > 0.
            rows: the number of rows to return, >= 0.

        Returns:
            Host arrays of ``rows`` rows: ``prompt``, ``prompt_mask`` [rows, prompt_len],
            ``response``, ``response_mask``, ``old_logp`` [rows, new_tokens] and
            ``advantages`` [rows] (R - P50); rows beyond the candidates are zeros (mask 0).
        """
        a = self.arrays
        advantage = a["reward"] - self.baseline()
        candidates = np.flatnonzero(a["filled"] & (advantage > 0))
        chosen = rng.permutation(candidates)[:rows]
        out = {k: np.zeros((rows, *a[k].shape[1:]), a[k].dtype) for k in (*TOKENS, "old_logp")}
        for key in out:
            out[key][: chosen.size] = a[key][chosen]
        out["advantages"] = np.zeros((rows,), np.float32)
        out["advantages"][: chosen.size] = advantage[chosen]
        return out

    def insert(self, step: int, rollout: dict[str, np.ndarray]) -> None:
        """Add step ``step``'s responses with reward >= ``min_reward`` and all its rewards.

        Args:
            step: the trainer step the rollout belongs to (its entries' birth step).
            rollout: host arrays of the step's rollout batch [B, ...]: ``prompt``,
                ``prompt_mask``, ``response``, ``response_mask``, ``rollout_logp`` and
                ``rewards`` [B].
        """
        a, s = self.arrays, self.settings
        rewards = np.asarray(rollout["rewards"], np.float32)
        for index in np.flatnonzero(rewards >= s.min_reward):
            slot = int(a["counters"][0] % s.capacity)
            for key in TOKENS:
                a[key][slot] = rollout[key][index]
            a["old_logp"][slot] = rollout["rollout_logp"][index]
            a["reward"][slot], a["born"][slot], a["filled"][slot] = rewards[index], step, True
            a["counters"][0] += 1
        for reward in rewards:
            a["baseline"][int(a["counters"][1] % s.baseline_size)] = reward
            a["counters"][1] += 1
        a["counters"][2] = min(int(a["counters"][2]) + rewards.size, s.baseline_size)

    def save(self, path: Path) -> None:
        """Write the buffer to ``path`` (an ``.npz``), atomically through a ``.tmp`` file.

        Args:
            path: the snapshot file to (over)write.
        """
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as file:
            np.savez(file, **self.arrays)
        tmp.replace(path)

    def load(self, path: Path) -> None:
        """Replace the buffer's arrays by those of the snapshot at ``path``.

        Args:
            path: an ``.npz`` written by :meth:`save`.

        Raises:
            ValueError: when a saved array's shape differs from this buffer's (capacity,
                layout or baseline size changed).
        """
        with np.load(path) as saved:
            for key, value in self.arrays.items():
                if saved[key].shape != value.shape:
                    raise ValueError(
                        f"replay snapshot {path}: {key} has shape {saved[key].shape}, the run's "
                        f"buffer {value.shape} (capacity, layout or baseline size changed)"
                    )
                self.arrays[key] = saved[key].copy()


class ReplayData:
    """``data(position, state)``: the rollout batch plus ``batch["replay"]`` (module docstring)."""

    def __init__(
        self,
        rollouts: Rollouts,
        settings: ReplaySettings,
        directory: str | Path,
        mesh: Mesh,
        *,
        prompt_len: int,
        new_tokens: int,
        seed: int = 0,
        every: int = 1,
        keep: int = 1,
    ) -> None:
        self.rollouts, self.settings, self.mesh = rollouts, settings, mesh
        self.directory = Path(directory)
        self.layout = (prompt_len, new_tokens)
        self.seed, self.every, self.keep = seed, every, keep
        self.buffer: ReplayBuffer | None = None
        self.position = -1  # the step the in-memory buffer is ready for

    def snapshot(self, position: int) -> Path:
        """The path of the buffer snapshot taken before step ``position``.

        Args:
            position: the trainer step the snapshot is ready for.

        Returns:
            ``<directory>/<position>.npz``.
        """
        return self.directory / f"{position}.npz"

    def buffer_at(self, position: int) -> ReplayBuffer:
        """The buffer as it stood before step ``position`` (read from its snapshot on resume).

        Args:
            position: the trainer step (0: a fresh, empty buffer).

        Returns:
            The in-memory buffer when it is ready for ``position``, else one loaded from
            ``<directory>/<position>.npz`` (empty at position 0).

        Raises:
            FileNotFoundError: when resuming at a step whose snapshot is missing.
        """
        if self.buffer is not None and self.position == position:
            return self.buffer
        buffer = ReplayBuffer(self.settings, *self.layout)
        if position > 0:
            path = self.snapshot(position)
            if not path.exists():
                raise FileNotFoundError(
                    f"cannot resume the SPEAR replay buffer at step {position}: {path} is "
                    "missing (the run directory lost its replay/ snapshots)"
                )
            buffer.load(path)
        return buffer

    def _prune(self, latest: int) -> None:
        checkpoints = sorted(
            (int(p.stem) for p in self.directory.glob("*.npz") if int(p.stem) % self.every == 0),
            reverse=True,
        )
        keep = set(checkpoints[: self.keep]) | {latest}
        for path in self.directory.glob("*.npz"):
            if int(path.stem) not in keep:
                path.unlink()

    def __call__(self, position: int, state: TrainState) -> dict[str, Any]:
        batch = self.rollouts(position, state)
        buffer = self.buffer_at(position)
        buffer.drop_stale(position)
        rows = int(batch["rewards"].shape[0])
        key = (self.seed, REPLAY_STREAM, position)
        replay = buffer.sample(np.random.default_rng(key), rows)
        host = {k: to_host(batch[k]) for k in (*TOKENS, "rollout_logp", "rewards")}
        buffer.insert(position, host)
        self.buffer, self.position = buffer, position + 1
        if jax.process_index() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            buffer.save(self.snapshot(position + 1))
            self._prune(position + 1)
        batch["replay"] = {k: to_global(v, self.mesh) for k, v in replay.items()}
        return batch
