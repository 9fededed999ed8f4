"""Rollout strategies of the RL trainer: how the rows of a step's batch are sampled.

A strategy is a registered method of kind ``rollout`` (``rollout.strategy: {name: ..., <args>}``
in the config; default ``sample``). Each step the rollout stage calls

    strategy(generate, prompt, prompt_mask, group_size=G, key=key, step=t, pad_id=pad) -> Rows

with the step's P prompts (host arrays ``[P, L]``, one row each) and ``generate(prompt_tokens,
prompt_mask, key) -> Rollout``: the current policy's sampler (N new tokens at the rollout
temperature, host numpy arrays back). A strategy returns exactly P x G rows (:class:`Rows`), so
the batch shape and the compiled update are the same for every strategy; ``check(group_size,
new_tokens)`` refuses at build time, with one line, a G or N the strategy cannot fill. Every
row answers one prompt (its group); a branched row is its source's completion up to the fork
position followed by a new continuation (``entropix.rollout.continue_from``), with the
log-probs and entropies of the policy that produced each token.

Token budget: ``Rows.generated[r]`` is the number of tokens row r holds that were generated for
it (a branch's shared prefix counts once, for its source); the trainer logs the batch sum as
``rollout/tokens``. Randomness comes from ``key`` only (a pure function of seed and step).
"""

import dataclasses
from collections.abc import Callable

import jax
import numpy as np
from flax import struct
from jax.typing import ArrayLike

from entropix.losses.registry import register
from entropix.rollout.branching import continue_from, fork_positions
from entropix.rollout.generate import Rollout
from entropix.validation import check_fraction, check_positive

# generate(prompt_tokens [R, L], prompt_mask [R, L], key) -> Rollout of R host rows
_Generate = Callable[[np.ndarray, np.ndarray, jax.Array], Rollout]


@struct.dataclass
class Rows:
    """Rows of a rollout batch (host arrays): ``rollout`` [R, ...], ``prompt`` [R] (the index
    of the prompt each row answers) and ``generated`` [R] (tokens generated for the row)."""

    rollout: Rollout
    prompt: np.ndarray
    generated: np.ndarray


def _host(rollout: Rollout) -> Rollout:
    return jax.tree.map(np.asarray, rollout)


def _concat(parts: list[Rows]) -> Rows:
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def _fresh(generate, prompt, prompt_mask, index, key) -> Rows:
    """One sampled row per entry of ``index`` (prompt indices)."""
    out = _host(generate(prompt[index], prompt_mask[index], key))
    return Rows(out, np.asarray(index), out.mask.sum(axis=1).astype(np.float32))


def _branches(generate, parent: Rows, source, fork, key, pad_id: int) -> Rows:
    """Rows re-generated from row ``source[m]`` of ``parent`` at position ``fork[m]``."""
    source, fork = np.asarray(source, np.int32), np.asarray(fork, np.int32)
    out = _host(continue_from(generate, parent.rollout, source, fork, key=key, pad_id=pad_id))
    after = np.arange(out.mask.shape[1])[None, :] >= fork[:, None]
    return Rows(out, parent.prompt[source], (out.mask & after).sum(axis=1).astype(np.float32))


def _select(rows: Rows, keep: np.ndarray) -> Rows:
    return jax.tree.map(lambda x: x[keep], rows)


@dataclasses.dataclass(frozen=True)
class Sample:
    """G independent samples per prompt (see :func:`sample`)."""

    def check(self, group_size: int, new_tokens: int) -> None:
        """Accept every G and N (plain sampling fills any group).

        Args:
            group_size: G, the rows per prompt (``rollout.group_size``).
            new_tokens: N, the response length budget (``rollout.max_new_tokens``).
        """
        del group_size, new_tokens

    def __call__(
        self,
        generate: _Generate,
        prompt: np.ndarray,
        prompt_mask: np.ndarray,
        *,
        group_size: int,
        key: jax.Array,
        step: int,
        pad_id: int,
    ) -> Rows:
        del step, pad_id
        index = np.repeat(np.arange(prompt.shape[0]), group_size)
        return _fresh(generate, prompt, prompt_mask, index, key)


@register(
    "sample",
    paper="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
    kind="rollout",
)
def sample() -> Sample:
    """Plain group sampling: G independent responses per prompt (the GRPO rollout).

    Formula:
        y_{p,1..G} ~ pi_theta(. | x_p) i.i.d. at the rollout temperature
        tokens = sum of the G x P responses' lengths

    Paper: DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models
    (Shao et al., 2024), the group of G outputs per question of GRPO.

    Defaults: G = rollout.group_size (DeepSeekMath sampled 64 per question). The rows are the
    prompt's G samples in order, exactly what the trainer sampled before strategies existed.

    Returns:
        The ``Sample`` strategy (it accepts every G and N).
    """
    return Sample()


@dataclasses.dataclass(frozen=True)
class EntropyFork:
    """Roots forked at their top-entropy positions (see :func:`entropy_fork`)."""

    forks: int = 2
    branches: int = 1

    @property
    def per_root(self) -> int:
        return 1 + self.forks * self.branches

    def check(self, group_size: int, new_tokens: int) -> None:
        """Refuse a G that is not a multiple of 1 + forks x branches, or forks > N.

        Args:
            group_size: G, the rows per prompt (``rollout.group_size``).
            new_tokens: N, the response length budget (``rollout.max_new_tokens``).

        Raises:
            ValueError: naming the setting that cannot be filled.
        """
        if group_size % self.per_root:
            raise ValueError(
                f"rollout.strategy entropy_fork: rollout.group_size={group_size} must be a "
                f"multiple of 1 + forks x branches = {self.per_root} (rows per root)"
            )
        if self.forks > new_tokens:
            raise ValueError(
                f"rollout.strategy entropy_fork: forks={self.forks} exceed the "
                f"{new_tokens} response tokens (rollout.max_new_tokens)"
            )

    def __call__(
        self,
        generate: _Generate,
        prompt: np.ndarray,
        prompt_mask: np.ndarray,
        *,
        group_size: int,
        key: jax.Array,
        step: int,
        pad_id: int,
    ) -> Rows:
        del step
        first, second = jax.random.split(key)
        roots = _fresh(
            generate,
            prompt,
            prompt_mask,
            np.repeat(np.arange(prompt.shape[0]), group_size // self.per_root),
            first,
        )
        positions, valid = fork_positions(roots.rollout.entropy, roots.rollout.mask, self.forks)
        positions = np.where(np.asarray(valid), np.asarray(positions), 0)
        source = np.repeat(np.arange(len(roots.prompt)), self.forks * self.branches)
        fork = np.repeat(positions, self.branches, axis=1).reshape(-1)
        return _concat([roots, _branches(generate, roots, source, fork, second, pad_id)])


@register(
    "entropy_fork",
    paper="TreeRL: LLM Reinforcement Learning with On-Policy Tree Search",
    kind="rollout",
)
def entropy_fork(forks: int = 2, branches: int = 1) -> EntropyFork:
    """Entropy-fork branching: each root forks at its k highest-entropy tokens.

    Formula:
        R = G / (1 + k b) roots per prompt, y_r ~ pi(. | x)
        F_r = top-k_t { H[r, t] : t valid }             (ties: earlier position)
        for f in F_r, b times: y' = y_r[:f] ++ (continuation ~ pi(. | x, y_r[:f]))[: N - f]
        rows: R roots + R k b branches = G;   tokens = sum |y_r| + sum |y'[f:]|

    Paper: TreeRL: LLM Reinforcement Learning with On-Policy Tree Search (Hou et al., 2025),
    whose EPTree forks at the highest-entropy tokens; the same entropy-fork operation is
    ``entropix.rollout.branch``.

    Defaults: k = 2 forks per root, b = 1 branch per fork (our choice; the library's
    ``branch`` defaults). Our choice: a root with fewer than k valid tokens forks its missing
    branches at position 0 (a fresh sample from the prompt), so every row holds a response.

    Args:
        forks: k, the forks per root, >= 1 (and <= N); default 2.
        branches: b, the continuations per fork, >= 1; default 1.

    Returns:
        The ``EntropyFork`` strategy; it needs G to be a multiple of 1 + k b.

    Raises:
        ValueError: when ``forks`` or ``branches`` is not positive.
    """
    check_positive(forks, "forks")
    check_positive(branches, "branches")
    return EntropyFork(forks, branches)


@dataclasses.dataclass(frozen=True)
class ETTRLTree:
    """ETMR tree rollout (see :func:`ettrl_tree`)."""

    forks: int = 2
    branches: int = 2
    iterations: int = 1

    @property
    def branch_rows(self) -> int:
        return self.iterations * self.forks * self.branches

    def check(self, group_size: int, new_tokens: int) -> None:
        """Refuse a G that leaves no root after the iterations x forks x branches branch rows.

        Args:
            group_size: G, the rows per prompt (``rollout.group_size``).
            new_tokens: N, the response length budget (``rollout.max_new_tokens``).

        Raises:
            ValueError: when G <= iterations x forks x branches.
        """
        del new_tokens
        if group_size <= self.branch_rows:
            raise ValueError(
                f"rollout.strategy ettrl_tree: rollout.group_size={group_size} leaves no root "
                f"after iterations x forks x branches = {self.branch_rows} branch rows; raise "
                "group_size or lower them"
            )

    def __call__(
        self,
        generate: _Generate,
        prompt: np.ndarray,
        prompt_mask: np.ndarray,
        *,
        group_size: int,
        key: jax.Array,
        step: int,
        pad_id: int,
    ) -> Rows:
        del step
        keys = jax.random.split(key, 1 + self.iterations)
        prompts = prompt.shape[0]
        roots = group_size - self.branch_rows
        tree = _fresh(generate, prompt, prompt_mask, np.repeat(np.arange(prompts), roots), keys[0])
        n = tree.rollout.mask.shape[1]
        shared = np.zeros(len(tree.prompt), np.int32)  # positions < shared: a parent's tokens
        used = np.zeros((len(tree.prompt), n), bool)  # positions already forked
        for level in range(self.iterations):
            t = np.arange(n)[None, :]
            open_ = tree.rollout.mask & (t >= shared[:, None]) & ~used
            scores = np.where(open_, tree.rollout.entropy, -np.inf)
            source, fork = [], []
            for p in range(prompts):
                rows = np.flatnonzero(tree.prompt == p)
                flat = scores[rows].reshape(-1)
                for i in np.argsort(-flat, kind="stable")[: self.forks]:
                    row, pos = (rows[i // n], i % n) if np.isfinite(flat[i]) else (rows[0], 0)
                    used[row, pos] = True
                    source += [row] * self.branches
                    fork += [pos] * self.branches
            new = _branches(generate, tree, source, fork, keys[1 + level], pad_id)
            tree = _concat([tree, new])
            shared = np.concatenate([shared, np.asarray(fork, np.int32) + 1])
            used = np.concatenate([used, np.zeros((len(source), n), bool)])
        return tree


@register(
    "ettrl_tree",
    paper="ETTRL: Balancing Exploration and Exploitation in LLM Test-Time Reinforcement "
    "Learning Via Entropy Mechanism",
    kind="rollout",
)
def ettrl_tree(forks: int = 2, branches: int = 2, iterations: int = 1) -> ETTRLTree:
    """ETTRL's Entropy-fork Tree Majority Rollout (ETMR): grow each prompt's tree at its
    highest-entropy tokens within a fixed row budget; the answers of all rows vote.

    Formula:
        M = G - L N T roots per prompt, y_m ~ pi(. | x)
        repeat L times: over every token of the prompt's tree not yet forked and not shared
          with a parent (a branch's tokens from its fork on; ties: earlier row, then position),
          pick the N of largest H[r, t]; from each, T branches
          y' = y_r[:t] ++ (continuation ~ pi(. | x, y_r[:t]))[: N_max - t]
        rows: M + L N T = G;  tokens = sum |roots| + sum |y'[t:]|  (shared prefixes once)

    Paper: ETTRL: Balancing Exploration and Exploitation in LLM Test-Time Reinforcement
    Learning Via Entropy Mechanism (Liu et al., 2025); the tree follows TreeRL's EPTree (forks
    at the tree's top-entropy tokens, iterated). The pseudo-label is the majority of all rows
    (the ``ttrl`` reward); Entropy-based Advantage Reshaping is ``ettrl_ear``.

    Defaults: N = 2 forks, T = 2 branches, L = 1 iteration (our choice: the paper's tree sizes
    were not available to us; with G = 8 this is 4 roots + 4 branches). Our choice: when a
    tree has fewer than N open tokens, the missing forks are fresh samples from the prompt
    (position 0 of its first root).

    Args:
        forks: N, the tokens forked per prompt and iteration, >= 1; default 2.
        branches: T, the continuations per forked token, >= 1; default 2.
        iterations: L, the rounds of forking, >= 1; default 1.

    Returns:
        The ``ETTRLTree`` strategy; it needs G > L N T (at least one root per prompt).

    Raises:
        ValueError: when a setting is not positive.
    """
    for value, name in ((forks, "forks"), (branches, "branches"), (iterations, "iterations")):
        check_positive(value, name)
    return ETTRLTree(forks, branches, iterations)


@dataclasses.dataclass(frozen=True)
class Cure:
    """CURE's two-stage rollout (see :func:`cure`)."""

    top_k: int = 3
    branches: int = 1
    stage_steps: int = 100

    def check(self, group_size: int, new_tokens: int) -> None:
        """Refuse a G that is not a multiple of 1 + branches (an original and its branches).

        Args:
            group_size: G, the rows per prompt (``rollout.group_size``).
            new_tokens: N, the response length budget (``rollout.max_new_tokens``).

        Raises:
            ValueError: when G is not a multiple of 1 + branches.
        """
        del new_tokens
        if group_size % (1 + self.branches):
            raise ValueError(
                f"rollout.strategy cure: rollout.group_size={group_size} must be a multiple of "
                f"1 + branches = {1 + self.branches} (an original and its branches)"
            )

    def __call__(
        self,
        generate: _Generate,
        prompt: np.ndarray,
        prompt_mask: np.ndarray,
        *,
        group_size: int,
        key: jax.Array,
        step: int,
        pad_id: int,
    ) -> Rows:
        if step >= self.stage_steps:
            index = np.repeat(np.arange(prompt.shape[0]), group_size)
            return _fresh(generate, prompt, prompt_mask, index, key)
        first, pick, second = jax.random.split(key, 3)
        originals = np.repeat(np.arange(prompt.shape[0]), group_size // (1 + self.branches))
        base = _fresh(generate, prompt, prompt_mask, originals, first)
        n = base.rollout.mask.shape[1]
        k = min(self.top_k, n)
        positions, valid = fork_positions(base.rollout.entropy, base.rollout.mask, k)
        count = np.maximum(np.asarray(valid).sum(axis=1), 1)
        draw = np.asarray(jax.random.uniform(pick, (len(count), self.branches)))
        choice = np.minimum((draw * count[:, None]).astype(np.int32), count[:, None] - 1)
        fork = np.take_along_axis(np.asarray(positions), choice, axis=1).reshape(-1)
        source = np.repeat(np.arange(len(count)), self.branches)
        return _concat([base, _branches(generate, base, source, fork, second, pad_id)])


@register(
    "cure",
    paper="CURE: Critical-Token-Guided Re-Concatenation for Entropy-Collapse Prevention",
    kind="rollout",
)
def cure(top_k: int = 3, branches: int = 1, stage_steps: int = 100) -> Cure:
    """CURE: re-generate from a high-entropy critical token and train on the original and the
    branched trajectories together; after ``stage_steps`` steps, plain sampling (stage 2).

    Formula:
        stage 1 (step < stage_steps): G / (1 + b) originals y ~ pi(. | x) per prompt;
          critical token c ~ Uniform(top-k_t H[y, t]) (b draws per original);
          y' = y[:c] ++ (continuation ~ pi(. | x, y[:c]))[: N - c]
          rows: originals + branches, one group per prompt (optimised jointly)
        stage 2 (step >= stage_steps): G i.i.d. samples per prompt (:func:`sample`)

    Paper: CURE: Critical-Token-Guided Re-Concatenation for Entropy-Collapse Prevention (Li et
    al., 2025). Stage 2 is DAPO: pair with ``loss.terms: [{name: clip_higher}]`` (DAPO's
    clip-higher) and the default token-mean aggregation.

    Defaults: b = 1 branch per original (half the group re-generated); top_k = 3 and
    stage_steps = 100 are our choices (the paper's candidate count and stage length were not
    available to us). Both stages fill the same G rows, so the update compiles once. DAPO's
    dynamic sampling (dropping zero-variance groups) is not part of this strategy.

    Args:
        top_k: the number of highest-entropy candidate tokens c is drawn from, >= 1 (capped at
            N); default 3.
        branches: b, the branches per original, >= 1; default 1.
        stage_steps: the trainer steps of stage 1, >= 0 (0: plain sampling throughout);
            default 100.

    Returns:
        The ``Cure`` strategy; it needs G to be a multiple of 1 + b.

    Raises:
        ValueError: when ``top_k`` or ``branches`` is not positive or ``stage_steps`` < 0.
    """
    check_positive(top_k, "top_k")
    check_positive(branches, "branches")
    if stage_steps < 0:
        raise ValueError(f"stage_steps must be >= 0; got {stage_steps}")
    return Cure(top_k, branches, stage_steps)


def aepo_fork_weights(
    entropy: ArrayLike,
    mask: ArrayLike,
    h_root: ArrayLike,
    alpha: float,
    gamma: float,
    penalty: float,
) -> np.ndarray:
    """AEPO branch weights ``[R, N]`` per position (0 at position 0 and invalid positions).

    Formula:
        dH_t = H_t - H_root
        l_t  = number of consecutive positions just before t (from 1) with dH > 0
        P_t  = clip(alpha + gamma dH_t, 0, 1) * max(0, 1 - penalty l_t)     for t >= 1

    Args:
        entropy: float [R, N] per-token entropies of the rows that may branch, in nats.
        mask: [R, N] bool (or 0/1), the valid tokens.
        h_root: float [R], H_root of each row's prompt (nats).
        alpha: the base weight, in [0, 1].
        gamma: the weight per nat of entropy rise, >= 0.
        penalty: the weight lost per consecutive preceding rise, >= 0.

    Returns:
        float64 [R, N] unnormalised branch weights P_t in [0, 1].
    """
    entropy = np.asarray(entropy, np.float64)
    valid = np.asarray(mask, bool)
    rise = (entropy - np.asarray(h_root, np.float64)[:, None]) * valid
    high = (rise > 0) & valid
    run = np.zeros(high.shape, np.int64)  # run[t]: consecutive high positions ending at t-1
    for t in range(2, high.shape[1]):
        run[:, t] = np.where(high[:, t - 1], run[:, t - 1] + 1, 0)
    weights = np.clip(alpha + gamma * rise, 0.0, 1.0) * np.maximum(0.0, 1.0 - penalty * run)
    weights[:, 0] = 0.0
    return np.where(valid, weights, 0.0)


@dataclasses.dataclass(frozen=True)
class AEPOBranch:
    """AEPO's dynamic entropy-balanced rollout (see :func:`aepo_branch`)."""

    beta: float = 1.0
    alpha: float = 0.5
    gamma: float = 1.0
    penalty: float = 0.5

    def check(self, group_size: int, new_tokens: int) -> None:
        """Accept every G and N (G = 1 keeps the one global sample, without branches).

        Args:
            group_size: G, the rows per prompt (``rollout.group_size``).
            new_tokens: N, the response length budget (``rollout.max_new_tokens``).
        """
        del group_size, new_tokens

    def global_count(
        self, entropy: np.ndarray, mask: np.ndarray, group_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """m_p for each prompt's G first-pass rows ``[P * G, N]`` (rows prompt-major).

        Args:
            entropy: float [P * G, N] per-token entropies of the first pass, in nats.
            mask: bool [P * G, N], the valid response tokens.
            group_size: G, the first-pass rows per prompt.

        Returns:
            (m, h_root): int64 [P] global samples kept per prompt, in 1..G, and float64 [P]
            H_root, the mean entropy of the prompt's first response tokens.
        """
        entropy = np.asarray(entropy, np.float64).reshape(-1, group_size, entropy.shape[-1])
        valid = np.asarray(mask, bool).reshape(entropy.shape)
        h_root = entropy[:, :, 0].mean(axis=1)
        later = valid[:, :, 1:]
        total = later.sum(axis=(1, 2))
        h_later = np.where(
            total > 0, (entropy[:, :, 1:] * later).sum(axis=(1, 2)) / np.maximum(total, 1), h_root
        )
        share = 1.0 / (1.0 + np.exp(-self.beta * (h_root - h_later)))
        return np.clip(np.rint(group_size * share), 1, group_size).astype(np.int64), h_root

    def __call__(
        self,
        generate: _Generate,
        prompt: np.ndarray,
        prompt_mask: np.ndarray,
        *,
        group_size: int,
        key: jax.Array,
        step: int,
        pad_id: int,
    ) -> Rows:
        del step
        first, pick, second = jax.random.split(key, 3)
        prompts = prompt.shape[0]
        rows = _fresh(
            generate, prompt, prompt_mask, np.repeat(np.arange(prompts), group_size), first
        )
        if group_size == 1:
            return rows
        m, h_root = self.global_count(rows.rollout.entropy, rows.rollout.mask, group_size)
        slot = np.tile(np.arange(1, group_size), prompts)  # the slots a branch may fill
        owner = np.repeat(np.arange(prompts), group_size - 1)
        source = owner * group_size + (slot - m[owner]) % m[owner]
        weights = aepo_fork_weights(
            rows.rollout.entropy[source],
            rows.rollout.mask[source],
            h_root[owner],
            self.alpha,
            self.gamma,
            self.penalty,
        )
        some = weights.sum(axis=1) > 0
        with np.errstate(divide="ignore"):  # log 0 = -inf: a position never drawn
            logits = np.log(np.where(some[:, None], weights, 1.0))
        fork = np.where(some, np.asarray(jax.random.categorical(pick, logits)), 0)
        branched = _branches(generate, rows, source, fork, second, pad_id)
        is_branch = slot >= m[owner]
        keep_global = np.arange(prompts * group_size) % group_size < np.repeat(m, group_size)
        return _concat([_select(rows, keep_global), _select(branched, is_branch)])


@register("aepo_branch", paper="Agentic Entropy-Balanced Policy Optimization", kind="rollout")
def aepo_branch(
    beta: float = 1.0, alpha: float = 0.5, gamma: float = 1.0, penalty: float = 0.5
) -> AEPOBranch:
    """AEPO's dynamic entropy-balanced rollout: an entropy-driven split of the group into global
    samples and branches, branching where entropy rises, penalising consecutive rises.

    Formula:
        (G first-pass samples of prompt p; H_root = entropy of the first response token,
         Hbar = mean entropy of the later tokens)
        m_p = clip(round(G sigmoid(beta (H_root - Hbar))), 1, G)    global samples kept
        each of the G - m_p other slots branches global row (slot - m_p) mod m_p at a position
        t ~ P_t / sum P,  P_t = clip(alpha + gamma (H_t - H_root), 0, 1) (1 - penalty l_t)_+
        (l_t: consecutive entropy-rise positions just before t); sum P = 0: a fresh sample
        tokens = sum |global rows| + sum |branch continuations|

    Paper: Agentic Entropy-Balanced Policy Optimization (Dong et al., 2025): entropy
    pre-monitoring m = k sigmoid(beta (H_root - Hbar_tool)) and the entropy-balanced adaptive
    rollout that penalises consecutive high-entropy branching; its clip is
    ``entropy_balanced_clip``.

    Defaults: beta = 1, alpha = 0.5, gamma = 1, penalty = 0.5 are our choices (the paper's
    values were not available to us). Our adaptation from tool calls to tokens: a token plays
    a tool-call step, the first response token the question. The first pass samples all G
    rows and the branch pass all G - 1 slots so that the shapes stay static; ``rollout/tokens``
    counts only the tokens of the rows kept.

    Args:
        beta: the sigmoid slope of the global/branch split, > 0; default 1.
        alpha: the base branch weight, in (0, 1]; default 0.5.
        gamma: the branch weight per nat of entropy rise, >= 0; default 1.
        penalty: the weight lost per consecutive entropy rise, >= 0; default 0.5.

    Returns:
        The ``AEPOBranch`` strategy (it accepts every G and N).

    Raises:
        ValueError: for a setting out of its range.
    """
    check_positive(beta, "beta")
    check_fraction(alpha, "alpha")
    if gamma < 0 or penalty < 0:
        raise ValueError(f"gamma and penalty must be >= 0; got {gamma}, {penalty}")
    return AEPOBranch(beta, alpha, gamma, penalty)
