"""Every family against its transformers peer: a random 2-layer model built with transformers in
the test (``peer.py``) and written with ``save_pretrained``.

Per family (Llama 3 with llama3 rope scaling, Llama/SmolLM2, Qwen2 with q/k/v bias, Qwen3 with
q/k norm and its own head_dim, Mistral with a sliding window): fp32 logits on a left-padded
batch equal transformers' to 1e-4, greedy generation equals ``generate``, the chat template
renders the same string (with and without a system turn), and ``save_pretrained`` exports a
directory that transformers loads with the same logits. Also: GGUF for the families that have
one, sharded safetensors, bf16 storage, placement on a 4-device mesh, and refused configs.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from entropix.models import (
    ModelFileError,
    config_from_hf,
    config_to_hf,
    load_gguf,
    load_hf,
    save_pretrained,
    tokenizer_from_hf,
)
from entropix.rollout import generate

torch = pytest.importorskip("torch", reason="torch is needed for the HF peer comparison")
transformers = pytest.importorskip("transformers", reason="HF transformers is the peer")
from tests.models import peer  # noqa: E402  (imports torch and transformers)
from tests.train.scripts import script_env  # noqa: E402

FAMILIES = list(peer.FAMILIES)
TOKENS, MASK = peer.left_padded_batch()


def _logits(model, tokens=TOKENS, mask=MASK):
    return np.asarray(model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)).logits)


def _max_diff(got, want, mask=MASK):
    return float(np.max(np.abs(got - want)[mask]))


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    """(family, directory, transformers model, entropix model, transformers logits)."""
    family = request.param
    directory = tmp_path_factory.mktemp(family)
    hf = peer.save_checkpoint(family, directory)
    return family, directory, hf, load_hf(directory), peer.hf_logits(hf, TOKENS, MASK)


def test_logits_match_hf_on_a_left_padded_batch(checkpoint):
    family, _, hf, model, want = checkpoint
    cfg = model.config
    expect = {
        "llama3": dict(rope_type="llama3", rope_factor=8.0, rope_original_max_len=64),
        "smollm2": dict(tie_embeddings=True, rope_theta=1e5),
        "qwen2": dict(qkv_bias=True, o_bias=False, tie_embeddings=True),
        "qwen3": dict(qk_norm=True, explicit_head_dim=16, qkv_bias=False),
        "mistral": dict(sliding_window=4),
    }[family]
    assert {k: getattr(cfg, k) for k in expect} == expect
    assert _max_diff(_logits(model), want) <= 1e-4


@pytest.mark.parametrize(
    "family, change",
    [
        ("llama3", dict(rope_type="default")),  # the silently-ignored scaling of the issue
        ("mistral", dict(sliding_window=None)),
    ],
)
def test_the_comparison_would_catch_an_ignored_feature(tmp_path, family, change):
    hf = peer.save_checkpoint(family, tmp_path)
    assert _max_diff(_logits(load_hf(tmp_path, **change)), peer.hf_logits(hf, TOKENS, MASK)) > 1e-2


def test_greedy_generation_matches_hf_generate(checkpoint):
    _, _, hf, model, _ = checkpoint
    with torch.no_grad():
        out = hf.generate(
            torch.tensor(TOKENS),
            attention_mask=torch.tensor(MASK.astype(np.int64)),
            do_sample=False,
            max_new_tokens=8,
            pad_token_id=0,
            eos_token_id=None,
        )
    want = out[:, TOKENS.shape[1] :].numpy()
    rollout = generate(
        model, jnp.asarray(TOKENS), jnp.asarray(MASK), key=jax.random.key(0), max_new_tokens=8
    )
    np.testing.assert_array_equal(np.asarray(rollout.tokens), want)


CONVERSATION = [
    {"role": "user", "content": "What is 17+25? <b>&</b> café"},
    {"role": "assistant", "content": "  42  "},
    {"role": "user", "content": "And 6*7?\nExplain."},
]
SYSTEM = {"role": "system", "content": "You answer in one line."}


def test_chat_template_renders_like_hf(checkpoint):
    family, directory, *_ = checkpoint
    ours = tokenizer_from_hf(directory)
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    cases = [(CONVERSATION, {}), ([SYSTEM, *CONVERSATION], {})]
    if family == "qwen3":
        tools = [{"name": "add", "description": 'a < b & "c" é', "parameters": {"x": 1}}]
        cases += [([SYSTEM, *CONVERSATION], {"tools": tools, "enable_thinking": False})]
    for messages, extra in cases:
        for generation_prompt in (True, False):
            text = ours.apply_chat_template(messages, generation_prompt, **extra)
            want = theirs.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt, **extra
            )
            assert text == want
            assert ours.encode(text) == theirs(text)["input_ids"]
    assert ours.eos_id == theirs.eos_token_id and ours.pad_id == theirs.pad_token_id


def test_save_pretrained_reloads_in_transformers(checkpoint, tmp_path):
    family, directory, hf, model, want = checkpoint
    save_pretrained(model, tmp_path, tokenizer=directory)
    exported = json.loads((tmp_path / "config.json").read_text())
    assert exported["model_type"] == hf.config.model_type
    peer_model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager"
    ).eval()
    assert _max_diff(peer.hf_logits(peer_model, TOKENS, MASK), want) <= 1e-4
    assert _max_diff(_logits(load_hf(tmp_path)), want) <= 1e-4
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.apply_chat_template(CONVERSATION, tokenize=False) == (
        tokenizer_from_hf(directory).apply_chat_template(CONVERSATION, False)
    )


def test_sigma_reparam_model_exports_its_effective_weights(tmp_path):
    hf = peer.save_checkpoint("smollm2", tmp_path / "in")
    model = load_hf(tmp_path / "in", use_sigma_reparam=True)
    model.eval()
    save_pretrained(model, tmp_path / "out", dtype="float32")
    reloaded = load_hf(tmp_path / "out")
    assert _max_diff(_logits(reloaded), peer.hf_logits(hf, TOKENS, MASK)) <= 2e-4


def test_config_round_trips_through_the_hf_dict(checkpoint):
    _, directory, _, model, _ = checkpoint
    assert config_from_hf(config_to_hf(model.config)) == model.config
    original = json.loads((directory / "config.json").read_text())
    assert config_to_hf(model.config)["model_type"] == original["model_type"]


@pytest.mark.parametrize(
    "family, arch", [("llama3", "llama"), ("qwen2", "qwen2"), ("qwen3", "qwen3")]
)
def test_gguf_of_each_family_matches_hf(tmp_path, family, arch):
    """llama.cpp layout: Llama 3 permuted Q/K rows + rope_freqs; Qwen2 biases; Qwen3 q/k norms
    and attention.key_length. Compared with the original model (transformers' GGUF reader
    drops rope_freqs and key_length) and, for qwen2, also with transformers reading the file."""
    hf = peer.hf_model(family, seed=4)
    peer.write_gguf(tmp_path / "m.gguf", hf, arch=arch)
    model = load_gguf(tmp_path / "m.gguf")
    want = peer.hf_logits(hf, TOKENS, MASK)
    assert _max_diff(_logits(model), want) <= 1e-4
    if family == "qwen2":
        reader = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf")
        assert _max_diff(_logits(model), peer.hf_logits(reader.eval(), TOKENS, MASK)) <= 1e-4


def test_sharded_safetensors_and_bf16_storage(tmp_path):
    hf = peer.save_checkpoint("qwen2", tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    assert _max_diff(_logits(load_hf(tmp_path)), peer.hf_logits(hf, TOKENS, MASK)) <= 1e-4
    # bf16 storage, fp32 compute: the same function as the peer with bf16-rounded weights
    model = load_hf(tmp_path, param_dtype="bfloat16")
    dtypes = {v.dtype for v in jax.tree.leaves(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype(jnp.bfloat16)}
    with torch.no_grad():  # round the parameters only (not the RoPE buffers)
        for p in hf.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    assert _max_diff(_logits(model), peer.hf_logits(hf, TOKENS, MASK)) <= 1e-4


def test_loading_onto_a_mesh_reads_each_device_block(tmp_path):
    peer.save_checkpoint("qwen2", tmp_path)
    script = Path(__file__).with_name("mesh_load_check.py")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr


BASE = {**peer.BASE, "model_type": "llama"}
BASE.pop("attn_implementation")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gpt2"}, "model_type 'gpt2' is not a Llama-family decoder"),
        ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope_type='yarn'"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling.rope_type='dynamic'"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "beta": 1}}, "beta=1"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5"),
        ({"quantization_config": {"quant_method": "gptq"}}, "quantization_config="),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"rope_interleaved": True}, "rope_interleaved=True"),
        ({"model_type": "qwen2", "use_mrope": True}, "use_mrope=True"),
        ({"attention_dropout": 0.1}, "attention_dropout=0.1"),
        (
            {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8,
             "max_window_layers": 1},
            "layer_types=\\['full_attention', 'sliding_attention'\\]",
        ),
    ],
)  # fmt: skip
def test_unsupported_configs_are_refused_with_key_and_value(change, message):
    with pytest.raises(ModelFileError, match=message):
        config_from_hf({**BASE, **change})


def test_v4_rope_scaling_and_harmless_keys_are_read():
    llama31 = {**BASE, "rope_theta": 5e5, "torch_dtype": "bfloat16", "pretraining_tp": 1}
    scaling = {k: v for k, v in peer.LLAMA3_ROPE.items() if k != "rope_theta"}
    config = config_from_hf({**llama31, "rope_scaling": scaling})
    assert (config.rope_type, config.rope_theta, config.rope_factor) == ("llama3", 5e5, 8.0)
    qwen = {**BASE, "model_type": "qwen2", "use_sliding_window": False, "sliding_window": 8}
    assert config_from_hf(qwen).sliding_window is None and config_from_hf(qwen).qkv_bias


def test_unexpected_tensors_are_refused(tmp_path):
    peer.save_checkpoint("qwen3", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    qwen_only = ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types")
    config = {k: v for k, v in config.items() if k not in qwen_only}
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(
        ModelFileError, match=r"self_attn\.[qk]_norm\.weight.*not part of the decoder"
    ):
        load_hf(tmp_path)
