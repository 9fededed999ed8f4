"""``configs/grpo_math_qwen.yaml`` end to end: a random Qwen2 checkpoint written by transformers
and a generated GSM8K-style JSONL, 2 GRPO steps from the CLI, then the exported policy loaded
back in transformers."""

import json
from pathlib import Path

import numpy as np
import transformers

import experiments
from entropix import config as cfg
from entropix import rl
from entropix.cli import main
from entropix.train import Checkpointer, init_state, read_metrics
from tests.models import peer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "grpo_math_qwen.yaml"


def _jsonl(path: Path, rows: int = 12) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        for a, b in rng.integers(1, 50, size=(rows, 2)):
            question = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
            answer = f"He has {a} + {b} = {a + b} apples.\n#### {a + b}"
            f.write(json.dumps({"question": question, "answer": answer}) + "\n")
    return path


def test_two_steps_on_a_qwen2_checkpoint_and_a_jsonl_then_export(tmp_path, capsys):
    checkpoint = tmp_path / "qwen2"
    peer.save_checkpoint("qwen2", checkpoint)
    data = _jsonl(tmp_path / "train.jsonl")
    run_dir = tmp_path / "run"
    overrides = [
        f"model.path={checkpoint}",
        f"data.path={data}",
        "data.eval_size=2",
        "rollout.prompts=2",
        "rollout.group_size=2",
        "rollout.max_new_tokens=6",
        "update.mini_batches=1",
        "update.micro_batches=1",
        "train.steps=2",
        "train.eval_every=2",
        "train.eval_prompts=2",
        "train.eval_samples=2",
        "train.eval_k=[1, 2]",
        "dynamics.every=1",
        "train.tensorboard=false",
    ]
    assert main(["run", str(CONFIG), *overrides, "--run-dir", str(run_dir), "--no-plot"]) == 0
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        assert np.isfinite(row["loss"]) and np.isfinite(row["dH/measured"])
        assert row["reward/unparsed"] == 1.0 and row["reward"] == 0.0  # no \boxed{} answer
    assert {"eval/accuracy", "eval/pass@2", "eval/maj@2"} <= set(rows[-1])
    capsys.readouterr()

    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()  # the trained policy
    config = cfg.load(run_dir / "config.yaml", schemas=experiments.schemas())  # grpo.Config
    plan = rl.build(config)
    abstract, shardings, _ = init_state(plan.policy.model_fn, plan.optimizer, plan.mesh)
    state = Checkpointer(run_dir / "checkpoints").restore(abstract, shardings)
    tokens, mask = peer.left_padded_batch()
    ours = np.asarray(state.model()(tokens, attention_mask=mask).logits)
    theirs = peer.hf_logits(hf, tokens, mask)
    np.testing.assert_allclose(ours[mask], theirs[mask], atol=1e-4)
