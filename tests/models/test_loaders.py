"""Checkpoint loaders vs Hugging Face transformers (torch CPU) on the same weights, and errors.

A tiny random HF Llama is saved as a safetensors directory and, converted the way llama.cpp
does it (Q/K rows permuted for its RoPE layout; ``peer.write_gguf``), as a GGUF file; entropix
and HF load both. The other families are in ``test_families.py``.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from entropix.models import ModelFileError, load_gguf, load_hf, load_pretrained

torch = pytest.importorskip("torch", reason="torch is needed for the HF peer comparison")
transformers = pytest.importorskip("transformers", reason="HF transformers is the peer")
gguf = pytest.importorskip("gguf")
from tests.models import peer  # noqa: E402  (imports torch and transformers)

HF_CONFIG = dict(
    vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    rope_theta=5000.0, rms_norm_eps=1e-6,
)  # fmt: skip
TOKENS = np.array([[3, 17, 5, 90, 41, 8, 8, 60], [1, 2, 3, 4, 5, 6, 7, 9]])


def _hf_model(tie: bool, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(**HF_CONFIG, tie_word_embeddings=tie)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger than the 0.02 init so that differences would show
        for p in model.parameters():
            p.mul_(10.0) if p.ndim == 2 else p.uniform_(0.5, 1.5)
    return model


def _hf_logits(model):
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.numpy()


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def hf_dir(request, tmp_path_factory):
    model = _hf_model(tie=request.param)
    path = tmp_path_factory.mktemp("hf")
    model.save_pretrained(path, safe_serialization=True)
    return path, model


def test_safetensors_directory_matches_hf(hf_dir):
    path, hf = hf_dir
    model = load_hf(path)
    assert model.config.tie_embeddings == hf.config.tie_word_embeddings
    assert model.config.rope_theta == 5000.0 and model.config.num_kv_heads == 2
    np.testing.assert_allclose(model(jnp.asarray(TOKENS)).logits, _hf_logits(hf), atol=1e-4)


def test_sigma_reparam_load_keeps_the_function(hf_dir):
    path, hf = hf_dir
    model = load_pretrained(path, use_sigma_reparam=True)
    model.eval()
    np.testing.assert_allclose(model(jnp.asarray(TOKENS)).logits, _hf_logits(hf), atol=2e-4)


def _encode(weight, qtype):
    if qtype == gguf.GGMLQuantizationType.Q8_1:  # no quantiser in gguf-py; bytes are never read
        return np.zeros(gguf.quants.quant_shape_to_byte_shape(weight.shape, qtype), np.uint8)
    return gguf.quants.quantize(weight, qtype)


def _write_gguf(path, hf, arch="llama", qtype=None):
    return peer.write_gguf(path, hf, arch=arch, qtype=qtype, encode=_encode)


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_gguf_file_matches_hf_reading_the_same_file(tmp_path, tie):
    hf = _hf_model(tie=tie, seed=1)
    path = _write_gguf(tmp_path / "tiny.gguf", hf)
    model = load_gguf(path)
    assert model.config.tie_embeddings == tie
    # exact round trip of the original (un-permuted) weights
    np.testing.assert_allclose(model(jnp.asarray(TOKENS)).logits, _hf_logits(hf), atol=1e-4)
    peer = transformers.LlamaForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    np.testing.assert_allclose(model(jnp.asarray(TOKENS)).logits, _hf_logits(peer), atol=1e-4)


def test_quantised_gguf_is_dequantised(tmp_path):
    hf = _hf_model(tie=False, seed=2)
    path = _write_gguf(tmp_path / "q8.gguf", hf, qtype=gguf.GGMLQuantizationType.Q8_0)
    model = load_gguf(path)
    peer = transformers.LlamaForCausalLM.from_pretrained(tmp_path, gguf_file="q8.gguf")
    np.testing.assert_allclose(model(jnp.asarray(TOKENS)).logits, _hf_logits(peer), atol=1e-4)


def test_clear_errors_name_the_file_and_problem(tmp_path, hf_dir):
    with pytest.raises(ModelFileError, match="missing.gguf: GGUF file not found"):
        load_gguf(tmp_path / "missing.gguf")
    with pytest.raises(ModelFileError, match="config.json not found"):
        load_hf(tmp_path)
    hf = _hf_model(tie=False, seed=3)
    path = _write_gguf(tmp_path / "other.gguf", hf, arch="gpt2")
    with pytest.raises(ModelFileError, match=r"other\.gguf: architecture 'gpt2' is not supported"):
        load_gguf(path)
    path = _write_gguf(tmp_path / "q.gguf", hf, qtype=gguf.GGMLQuantizationType.Q8_1)
    with pytest.raises(
        ModelFileError, match=r"q\.gguf: tensor 'blk\.0\..*' uses quantisation Q8_1"
    ):
        load_gguf(path)
    src, _ = hf_dir
    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads((src / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ModelFileError, match="model_type 'gpt2' is not a Llama"):
        load_hf(bad)
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="no \\*.safetensors"):
        load_hf(bad)
    with pytest.raises(ModelFileError, match="expected a .gguf file"):
        load_pretrained(tmp_path / "weights.bin")
