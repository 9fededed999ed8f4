"""Scaling suite: many seeds of one experiment as one vmapped program vs a Python loop of runs.

The workload is the bandit dynamics experiment, ``experiments.dynamics.run_bandit(key,
config)``: a tabular softmax policy over K arms trained for S steps (``lax.scan``) by exact
policy gradient on J = sum_k pi_k r_k, recording per step the entropy, the reward and the
predicted and measured entropy change. It is a pure function of the PRNG key.

Figure per seed count n:

* ``speedup_loop/vmap``  seconds of n calls of the compiled single-seed run in a Python loop
  over one call of the compiled ``vmap`` of the run over n keys (PureJaxRL style), as the
  median over timing rounds of the per-round ratio (``timing.paired_ratio``: both see the same
  load from other processes; the ratio of the two medians is in ``values``). Both are compiled
  before timing; the loop waits only for its last results. Target at 64 seeds: >= 5.

Row ``grpo 8 seeds``: a whole tiny GRPO run (``entropix.rl.seeds``: on-device addition
problems, generation with the KV cache, the JAX reward, the RL trainer's compiled step, for
``train.steps`` steps) over 8 seeds as one vmapped program vs a Python loop calling the
compiled single-seed program once per seed (same seeds, same initial states). Sizes
(``GRPO``): a 1-layer dim-32 decoder, 2-digit addition, 4 prompts x 4 samples, 20 steps (4
with --quick), a greedy evaluation on 8 held-out prompts at the end. ``speedup_loop/vmap``
as above; compile time is excluded from both (each is compiled before timing; the compile
seconds are in ``values``). Target: >= 4.

Beside it, ``ceiling_loop/batched``: the loop over one call of the single-seed program with 8x
the prompts (one seed's weights, 8x the rows: the same work as the 8 seeds in the best-batched
form there is), the median per-round ratio. Stacking seeds cannot cut the loop's time by more
than the work allows, so this is what the vmapped program could reach on the machine at best:
where it is under the target, the machine does the work of one seed's step at full speed
already and the target needs an accelerator, where one seed's program leaves most of the
device idle.
"""

import time
from functools import partial

import jax
import jax.numpy as jnp

from entropix.bench import report
from entropix.bench.timing import compile_jit, paired_ratio, time_calls
from entropix.config import from_data
from entropix.rl import RLConfig, SeedsProgram
from experiments.dynamics import BanditConfig, run_bandit

NORMAL = {"arms": 64, "steps": 2000, "seeds": (16, 64)}
QUICK = {"arms": 8, "steps": 50, "seeds": (4, 8)}
SPEEDUP_TARGET = 5.0
SPEEDUP_TARGET_SEEDS = 64
GRPO_SEEDS = 8
GRPO_TARGET = 4.0
GRPO = {  # a tiny GRPO run: 1-layer dim-32 decoder, 2-digit addition, 4 prompts x 4 samples
    "task": {"name": "addition", "digits": 2, "format_coef": 0.1},
    "model": {"dim": 32, "layers": 1, "heads": 2, "kv_heads": 1, "ffn_dim": 64},
    "sft": {"steps": 0},
    "rollout": {"prompts": 4, "group_size": 4},
    "train": {"steps": 20, "eval_prompts": 8, "eval_every": 0, "tensorboard": False},
    "dynamics": {"every": 0},
}
GRPO_QUICK_STEPS = 4


def run(quick: bool, repeats: int) -> list[dict]:
    """One row per seed count, then the ``grpo 8 seeds`` row (:func:`grpo_seeds`).

    Args:
        quick: measure the quick sizes (``QUICK``) instead of the normal ones (``NORMAL``).
        repeats: timed rounds per program (>= ``timing.MIN_REPEATS``).

    Returns:
        One ``report.row`` dict per seed count, then the GRPO row.
    """
    sizes = QUICK if quick else NORMAL
    config = BanditConfig(arms=sizes["arms"], steps=sizes["steps"])
    single = partial(run_bandit, config=config)
    rows = []
    for seeds in sizes["seeds"]:
        keys = jax.random.split(jax.random.PRNGKey(0), seeds)
        c_vmap = compile_jit(jax.vmap(single), keys)
        c_single = compile_jit(single, keys[0])
        key_list = list(keys)

        def loop(c_single=c_single, key_list=key_list):
            return [c_single(k) for k in key_list]

        t_vmap, t_loop = time_calls([partial(c_vmap, keys), loop], repeats)
        ratio = paired_ratio(t_loop, t_vmap)
        target = {}
        if seeds == SPEEDUP_TARGET_SEEDS:
            target[f">= {SPEEDUP_TARGET:g}x at {seeds} seeds"] = ratio >= SPEEDUP_TARGET
        values = {
            "workload": "experiments.dynamics.run_bandit",
            "seeds": seeds,
            "arms": sizes["arms"],
            "steps": sizes["steps"],
            "ratio_of_medians": t_loop.median / t_vmap.median,
            "vmap": t_vmap.as_dict(),
            "loop": t_loop.as_dict(),
        }
        rows.append(report.row(f"{seeds} seeds", {"speedup_loop/vmap": ratio}, values, target))
    rows.append(grpo_seeds(quick, repeats))
    return rows


def _compiled(fn, *args) -> tuple[object, float]:
    """(the compiled executable of ``fn`` for ``args``, its compile seconds)."""
    start = time.perf_counter()
    compiled = compile_jit(fn, *args)
    return compiled, time.perf_counter() - start


def grpo_seeds(quick: bool, repeats: int) -> dict:
    """The ``grpo 8 seeds`` row (see the module docstring).

    Args:
        quick: run ``GRPO_QUICK_STEPS`` train steps instead of ``GRPO["train"]["steps"]``.
        repeats: timed rounds per program (>= ``timing.MIN_REPEATS``).

    Returns:
        The ``report.row`` dict.
    """
    steps = GRPO_QUICK_STEPS if quick else GRPO["train"]["steps"]
    sections = {**GRPO, "train": {**GRPO["train"], "steps": steps}}
    config = from_data(RLConfig, sections, source="bench scaling grpo")
    program = SeedsProgram(config)
    rollout = {**GRPO["rollout"], "prompts": GRPO["rollout"]["prompts"] * GRPO_SEEDS}
    batched_config = {**sections, "rollout": rollout}
    batched = SeedsProgram(from_data(RLConfig, batched_config, source="bench scaling grpo 8x"))
    seeds = list(range(GRPO_SEEDS))
    states = program.initial_states(seeds)
    singles = [program.initial_state(s) for s in seeds]
    seed_ids = jnp.asarray(seeds, jnp.int32)
    c_vmap, compile_vmap = _compiled(program.run_all, states, seed_ids)
    c_single, compile_single = _compiled(program.run_one, singles[0], seed_ids[0])
    batched_state = batched.initial_state(0)
    c_batched, _ = _compiled(batched.run_one, batched_state, seed_ids[0])

    def loop():
        return [c_single(state, seed) for state, seed in zip(singles, seed_ids, strict=True)]

    t_vmap, t_loop, t_batched = time_calls(
        [lambda: c_vmap(states, seed_ids), loop, lambda: c_batched(batched_state, seed_ids[0])],
        repeats,
    )
    ratio = paired_ratio(t_loop, t_vmap)
    ceiling = paired_ratio(t_loop, t_batched)
    values = {
        "workload": "entropix.rl.seeds.SeedsProgram (tiny GRPO, 2-digit addition)",
        "seeds": GRPO_SEEDS,
        "steps": steps,
        "rows_per_step": config.rollout.prompts * config.rollout.group_size,
        "new_tokens": program.plan.policy.layout.new_tokens,
        "params": program.plan.policy.config.num_params(),
        "compile": "excluded from both (compiled before timing)",
        "compile_vmap_s": compile_vmap,
        "compile_single_s": compile_single,
        "ratio_of_medians": t_loop.median / t_vmap.median,
        "vmap": t_vmap.as_dict(),
        "loop": t_loop.as_dict(),
        "batched_rows": rollout["prompts"] * config.rollout.group_size,
        "batched": t_batched.as_dict(),
    }
    target = {f">= {GRPO_TARGET:g}x at {GRPO_SEEDS} seeds (tiny GRPO)": ratio >= GRPO_TARGET}
    ratios = {"speedup_loop/vmap": ratio, "ceiling_loop/batched": ceiling}
    return report.row(f"grpo {GRPO_SEEDS} seeds", ratios, values, target)
