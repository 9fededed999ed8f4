"""Memory-sane loading: a generated ~1.2B-parameter random checkpoint (Llama 3.2 1B shapes, bf16,
4 safetensors shards + index) loads in a fresh process with peak host RSS <= 1.3x its size on
disk (JAX on CPU, so the loaded model itself is host memory). Slow: ~2.5 GB written to disk.

Run: ``python -m pytest -m slow -n 0 tests/models/test_large_checkpoint.py -s`` (prints the
numbers).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.train.scripts import script_env

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

CONFIG = dict(
    model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
    num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
    max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
    rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=32.0,
                         low_freq_factor=1.0, high_freq_factor=4.0,
                         original_max_position_embeddings=8192),
    hidden_act="silu", torch_dtype="bfloat16",
)  # fmt: skip


def _shapes(c):
    d, f, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    yield "model.embed_tokens.weight", (c["vocab_size"], d)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (d,)
        yield p + "self_attn.q_proj.weight", (q, d)
        yield p + "self_attn.k_proj.weight", (kv, d)
        yield p + "self_attn.v_proj.weight", (kv, d)
        yield p + "self_attn.o_proj.weight", (d, q)
        yield p + "post_attention_layernorm.weight", (d,)
        yield p + "mlp.gate_proj.weight", (f, d)
        yield p + "mlp.up_proj.weight", (f, d)
        yield p + "mlp.down_proj.weight", (d, f)
    yield "model.norm.weight", (d,)


def _write_checkpoint(directory: Path, shards: int = 4) -> int:
    """Random bf16 tensors in ``shards`` files + index (one shard in memory at a time)."""
    generator = torch.Generator().manual_seed(0)
    names = list(_shapes(CONFIG))
    per_shard = -(-len(names) // shards)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {
            name: (0.02 * torch.randn(shape, generator=generator)).to(torch.bfloat16)
            for name, shape in names[s * per_shard : (s + 1) * per_shard]
        }
        safetensors_torch.save_file(tensors, directory / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
        del tensors
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    (directory / "config.json").write_text(json.dumps(CONFIG))
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


@pytest.mark.slow
def test_a_1b_checkpoint_loads_within_1_3x_its_size_in_host_memory(tmp_path):
    disk = _write_checkpoint(tmp_path)
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("rss_check.py")), str(tmp_path), "bfloat16"],
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    ratio = report["peak_rss"] / disk
    print(
        f"\n{report['params'] / 1e9:.3f}B params, {disk / 2**30:.2f} GiB on disk; peak RSS "
        f"{report['peak_rss'] / 2**30:.2f} GiB (baseline after imports "
        f"{report['baseline_rss'] / 2**30:.2f} GiB): ratio {ratio:.3f}, "
        f"load overhead {(report['peak_rss'] - report['baseline_rss']) / disk:.3f}x disk, "
        f"{report['seconds']:.1f} s"
    )
    assert 1.2e9 < report["params"] < 1.3e9
    assert np.isfinite(ratio) and ratio <= 1.3
