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
"""

from functools import partial

import jax

from entropix.bench import report
from entropix.bench.timing import compile_jit, paired_ratio, time_calls
from experiments.dynamics import BanditConfig, run_bandit

NORMAL = {"arms": 64, "steps": 2000, "seeds": (16, 64)}
QUICK = {"arms": 8, "steps": 50, "seeds": (4, 8)}
SPEEDUP_TARGET = 5.0
SPEEDUP_TARGET_SEEDS = 64


def run(quick: bool, repeats: int) -> list[dict]:
    """One row per seed count."""
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
    return rows
