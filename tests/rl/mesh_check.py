"""RL trainer on simulated devices (run as a script: JAX device flags need a fresh process).

    python mesh_check.py OUT_DIR mesh              # 8 CPU devices: 1-device run vs meshes
    python mesh_check.py OUT_DIR PORT PROCESS_ID   # one of 2 processes with 2 CPU devices each

``mesh``: 3 tiny GRPO steps (ppo_clip + kl_ref, two micro-batches, the dynamics probe, a
greedy evaluation) on one device and on meshes (data=8), (data=2, fsdp=4), (data=4, tensor=2),
and the same steps with EAST steering (``rollout.steering``) on one device and on (data=8);
prints a JSON report of the largest metric and parameter differences to the one-device run,
the shardings the generation program takes its parameters with, and the one-line error of a
batch that does not split over the mesh; the one-device run's metrics and parameters go to
OUT_DIR/one.json and one.npz. The distributed processes run the same steps on a (data=4) mesh
over both processes; process 0 writes distributed.json and distributed.npz.
"""

import json
import sys
from pathlib import Path

import jax

from tests.rl import tiny

STEPS = 3
SECTIONS = {
    "loss": {"terms": [{"name": "ppo_clip"}, {"name": "kl_ref", "coef": 0.1}]},
    "update": {"micro_batches": 2, "vocab_chunk": 16},
    "rollout": {**tiny.BASE["rollout"], "prompts": 4},  # 16 rows: 8 per micro-batch
}
OVERRIDES = (
    "train.steps=3",
    "dynamics.every=1",
    "train.eval_every=0",
    "train.eval_prompts=8",  # evaluated once, at the last step
    "train.checkpoint_every=2",
)
VOLATILE = ("time", "elapsed_s", "steps_per_s")


def run(mesh, run_dir, *overrides):
    """(metrics per step without timings, {path: params}) of the tiny run on ``mesh``."""
    import numpy as np
    from jax.experimental import multihost_utils

    from entropix import rl
    from entropix.train import read_metrics
    from entropix.train.checkpoint import flatten_state

    config = tiny.config(*OVERRIDES, *overrides, **SECTIONS)
    plan = rl.build(config, task=tiny.EvenSum(seed=0), mesh=mesh)
    result = rl.run(plan, run_dir)
    params = {}
    for key, value in flatten_state(result.state.params).items():
        if jax.process_count() > 1:
            value = multihost_utils.process_allgather(value, tiled=True)
        params[key] = np.asarray(value)
    rows = [
        {k: v for k, v in r.items() if not k.startswith(VOLATILE)}
        for r in (read_metrics(run_dir) if jax.process_index() == 0 else [])
    ]
    return rows, params, plan, result


def largest_differences(rows, params, base_rows, base_params) -> dict:
    import numpy as np

    def gap(x, y):  # NaN (e.g. a telemetry bin without tokens) must be NaN in both
        if np.isnan(x) and np.isnan(y):
            return 0.0
        # relative above 1: float32 rounding scales with the value (dlogp/max, one token's
        # log-prob change, is several nats here and carries its log-probs' rounding)
        return float(np.nan_to_num(abs(x - y) / max(1.0, abs(y)), nan=np.inf))

    metric, worst = max(
        (gap(a[k], b[k]), f"step {b['step']} {k}")
        for a, b in zip(rows, base_rows, strict=True)
        for k in b
        if k != "step"
    )
    keys_match = all(a.keys() == b.keys() for a, b in zip(rows, base_rows, strict=True))
    param = max(float(np.max(np.abs(params[k] - base_params[k]))) for k in base_params)
    return {
        "metric_diff": float(metric),
        "worst_metric": worst,
        "param_diff": param,
        "keys_match": keys_match,
    }


def mesh_report(out: Path) -> dict:
    from flax import nnx

    from entropix import rl
    from entropix.rollout.generate import _generate_jit
    from entropix.train import make_mesh

    base_rows, base_params, _, _ = run(make_mesh(1, 1, 1, devices=jax.devices()[:1]), out / "one")
    save(out, "one", base_rows, base_params)
    report = {"steps": len(base_rows), "eval": "eval/accuracy" in base_rows[-1]}
    report["probe"] = "dH/predicted" in base_rows[0]
    for shape in ((8, 1, 1), (2, 4, 1), (4, 1, 2)):
        rows, params, plan, result = run(make_mesh(*shape), out / "x".join(map(str, shape)))
        report[str(shape)] = largest_differences(rows, params, base_rows, base_params)
        if shape != (8, 1, 1):  # the generation program reads the parameters where they are
            state = result.state
            graphdef, gen_state = nnx.split(state.model())
            batch = plan.rollouts(0, state)
            lowered = _generate_jit.lower(
                graphdef,
                gen_state,
                batch["prompt"],
                batch["prompt_mask"],
                jax.random.PRNGKey(0),
                max_new_tokens=plan.policy.layout.new_tokens,
                sampler=plan.rollouts.sampler,
                eos_ids=(plan.policy.codec.eos_id,),
                pad_id=plan.policy.codec.pad_id,
                use_cache=True,
                score_temperature=1.0,
            )
            shardings = lowered.compile().input_shardings[0][0]
            specs = {
                "/".join(map(str, path)): str(s.spec)
                for path, s in jax.tree_util.tree_flatten_with_path(shardings)[0]
            }
            q = [v for k, v in specs.items() if "q_proj" in k and "kernel" in k][0]
            embed = [v for k, v in specs.items() if "embedding" in k][0]
            prompt_spec = str(batch["prompt"].sharding.spec)
            report[f"{shape}/generate"] = {"q_proj": q, "embedding": embed, "prompt": prompt_spec}
    steer = "rollout.steering={name: east, config: {alpha: 0.5}}"  # probe rows padded to 8
    one = run(make_mesh(1, 1, 1, devices=jax.devices()[:1]), out / "steered_one", steer)
    eight = run(make_mesh(8, 1, 1), out / "steered_8x1x1", steer)
    report["steered"] = largest_differences(*eight[:2], *one[:2])
    report["steered"]["metrics"] = sorted(one[0][0])
    try:
        rl.build(
            tiny.config("update.micro_batches=2", "rollout.group_size=4", "rollout.prompts=2"),
            task=tiny.EvenSum(seed=0),
            mesh=make_mesh(8, 1, 1),
        )
        report["bad_batch"] = None
    except ValueError as error:
        report["bad_batch"] = str(error)
    return report


def save(out: Path, name: str, rows, params) -> None:
    import numpy as np

    if jax.process_index() == 0:
        (out / f"{name}.json").write_text(json.dumps(rows))
        np.savez(out / f"{name}.npz", **params)


def main(out: str, mode: list[str]) -> int:
    out = Path(out)
    if mode[0] == "mesh":
        jax.config.update("jax_num_cpu_devices", 8)
        print(json.dumps(mesh_report(out)))
        return 0
    port, process_id = int(mode[0]), int(mode[1])
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", 2, process_id)
    from entropix.train import make_mesh

    rows, params, _, _ = run(make_mesh(4, 1, 1), out / "distributed")
    save(out, "distributed", rows, params)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
