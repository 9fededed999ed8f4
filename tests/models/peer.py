"""The peer for the model tests: small random transformers models per family, built in the test.

``hf_model(family)`` builds a 2-layer random model with transformers from a config (no
download), with weights, biases and norm scales drawn large enough that a wrong formula shows;
``save_checkpoint`` writes it with ``save_pretrained`` (+ a character-level tokenizer and the
family's chat template); ``write_gguf`` converts it the way llama.cpp's converter does (Q/K
rows permuted for "llama", none for "qwen2"/"qwen3"; Llama 3's scaling as ``rope_freqs``).
Everything is seeded and written independently of the entropix loaders.
"""

import numpy as np
import torch
import transformers

VOCAB = 264  # 256 byte-level symbols + up to 5 special tokens, rounded up
BASE = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    rms_norm_eps=1e-6, attn_implementation="eager",
)  # fmt: skip

LLAMA3_ROPE = dict(
    rope_type="llama3", rope_theta=5000.0, factor=8.0, low_freq_factor=1.0,
    high_freq_factor=4.0, original_max_position_embeddings=64,
)  # fmt: skip
# family -> (transformers config class, extra config fields)
FAMILIES = {
    # Llama 3.x: llama3 rope scaling as transformers v5 writes it (rope_parameters); with head
    # dim 8, theta 5000 and original context 64 the 4 frequencies hit all three branches.
    "llama3": (transformers.LlamaConfig, dict(rope_parameters=LLAMA3_ROPE)),
    # today's Llama / SmolLM2: tied embeddings, plain RoPE
    "smollm2": (
        transformers.LlamaConfig,
        dict(tie_word_embeddings=True, rope_parameters=dict(rope_type="default", rope_theta=1e5)),
    ),
    # Qwen2/2.5: q/k/v biases (o_proj has none), tied embeddings as in the small Qwen2.5
    "qwen2": (transformers.Qwen2Config, dict(tie_word_embeddings=True)),
    # Qwen3: per-head q/k RMSNorm, head_dim 16 != hidden / heads = 8
    "qwen3": (transformers.Qwen3Config, dict(head_dim=16)),
    # Mistral: sliding window 4, shorter than the test sequences so that it matters
    "mistral": (transformers.MistralConfig, dict(sliding_window=4)),
}

SPECIALS = {
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>"],
    "smollm2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "qwen3": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
    "mistral": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
}  # fmt: skip
TOKENS = {  # bos, eos, pad
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"),
    "smollm2": ("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    "qwen2": (None, "<|im_end|>", "<|endoftext|>"),
    "qwen3": (None, "<|im_end|>", "<|endoftext|>"),
    "mistral": ("<s>", "</s>", "<unk>"),
}

_CHATML_TURNS = (
    "{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _chatml(default_system: str) -> str:
    return (
        "{%- if messages[0].role == 'system' %}"
        "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
        "{%- else %}{{- '<|im_start|>system\\n" + default_system + "<|im_end|>\\n' }}"
        "{%- endif %}" + _CHATML_TURNS
    )


# Written for these tests in the style of each family's template (not copied from a hub file).
TEMPLATES = {
    "llama3": (
        "{{- bos_token }}"
        "{%- if messages[0]['role'] == 'system' %}"
        "{%- set system = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
        "{%- else %}{%- set system = 'Cutting Knowledge Date: December 2023' %}{%- endif %}"
        "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system + '<|eot_id|>' }}"
        "{%- for message in messages %}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        "{{- message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
        "{%- if add_generation_prompt %}"
        "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
    ),
    "smollm2": _chatml("You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    "qwen2": _chatml("You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
    "qwen3": (
        "{%- if tools %}{{- '<|im_start|>system\\n' }}"
        "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
        "{{- '# Tools\\n<tools>' }}{%- for tool in tools %}{{- '\\n' + tool | tojson }}"
        "{%- endfor %}{{- '\\n</tools><|im_end|>\\n' }}"
        "{%- elif messages[0].role == 'system' %}"
        "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
        "{%- set ns = namespace(last_user=-1) %}"
        "{%- for message in messages[::-1] %}{%- if message.role == 'user' %}"
        "{%- set ns.last_user = messages | length - 1 - loop.index0 %}{%- break %}"
        "{%- endif %}{%- endfor %}"
        "{%- for message in messages %}{%- if message.role == 'system' %}{%- continue %}"
        "{%- endif %}{{- '<|im_start|>' + message.role + '\\n' + message.content | trim }}"
        "{%- if loop.index0 == ns.last_user %}{{- ' /last' }}{%- endif %}"
        "{{- '<|im_end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
        "{%- if enable_thinking is defined and enable_thinking is false %}"
        "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
    ),
    "mistral": (
        "{{- bos_token }}{%- for message in messages %}"
        "{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}"
        "{%- elif message['role'] == 'system' %}{{- message['content'] + '\\n\\n' }}"
        "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
        "{%- else %}{{- raise_exception('Only user, system and assistant roles are supported') }}"
        "{%- endif %}{%- endfor %}"
    ),
}


def hf_model(family: str, seed: int = 0, **overrides):
    """A random 2-layer transformers model of ``family`` (fp32, eval mode)."""
    config_class, extra = FAMILIES[family]
    config = config_class(**{**BASE, **extra, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # larger than the 0.02 init so that differences would show
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    return model


def hf_tokenizer(family: str):
    """A byte-level BPE tokenizer (the 256 byte symbols, a few merges, the special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(symbols))}
    merges = [("Ġ", "t"), ("e", "r")]
    vocab.update({"Ġt": len(vocab), "er": len(vocab) + 1})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIALS[family])
    bos, eos, pad = TOKENS[family]
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad
    )
    tokenizer.chat_template = TEMPLATES[family]
    return tokenizer


def save_checkpoint(family: str, directory, seed: int = 0, **save_kwargs):
    """``hf_model(family)`` + tokenizer written with ``save_pretrained``; returns the model."""
    model = hf_model(family, seed)
    model.save_pretrained(directory, **save_kwargs)
    hf_tokenizer(family).save_pretrained(directory)
    return model


def left_padded_batch(seed: int = 0, pads=(0, 3, 6), length: int = 12):
    """int64 tokens [3, length] and bool mask: row i has ``pads[i]`` leading pad tokens (id 0)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, size=(len(pads), length))
    mask = np.ones_like(tokens, bool)
    for row, pad in enumerate(pads):
        tokens[row, :pad], mask[row, :pad] = 0, False
    return tokens, mask


def hf_logits(model, tokens, mask):
    """transformers' logits with positions counting real tokens (as ``generate`` does)."""
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = model(
            torch.tensor(tokens),
            attention_mask=torch.tensor(mask.astype(np.int64)),
            position_ids=torch.tensor(positions),
        )
    return out.logits.numpy()


def llama_cpp_permute(weight, heads):
    """What llama.cpp's converter does to Q/K rows (written independently of the loader)."""
    rows = weight.shape[0]
    out = np.empty_like(weight)
    d = rows // heads
    for h in range(heads):
        block = weight[h * d : (h + 1) * d]
        out[h * d : (h + 1) * d : 2] = block[: d // 2]
        out[h * d + 1 : (h + 1) * d : 2] = block[d // 2 :]
    return out


_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}  # fmt: skip


def write_gguf(path, hf, arch="llama", qtype=None, encode=None):
    """Convert transformers model ``hf`` to GGUF the way llama.cpp does (F32, or ``qtype``)."""
    import gguf

    c = hf.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if head_dim * c.num_attention_heads != c.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    sd = {k: v.numpy().astype(np.float32) for k, v in hf.state_dict().items()}
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    if c.rope_parameters.get("rope_type") == "llama3":  # llama.cpp: divisors per frequency
        default = 1.0 / c.rope_parameters["rope_theta"] ** (np.arange(0, head_dim, 2) / head_dim)
        scaled = hf.model.rotary_emb.inv_freq.numpy().astype(np.float64)
        writer.add_tensor("rope_freqs.weight", (default / scaled).astype(np.float32))
    for i in range(c.num_hidden_layers):
        for hf_name, g_name in _GGUF_NAMES.items():
            for kind in ("weight", "bias"):
                w = sd.get(f"model.layers.{i}.{hf_name}.{kind}")
                if w is None:
                    continue
                if arch == "llama" and g_name == "attn_q":
                    w = llama_cpp_permute(w, c.num_attention_heads)
                elif arch == "llama" and g_name == "attn_k":
                    w = llama_cpp_permute(w, c.num_key_value_heads)
                name = f"blk.{i}.{g_name}.{kind}"
                if qtype is not None and w.ndim == 2:
                    raw = (encode or gguf.quants.quantize)(w, qtype)
                    writer.add_tensor(name, raw, raw_dtype=qtype)
                else:
                    writer.add_tensor(name, w)
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not c.tie_word_embeddings:
        writer.add_tensor("output.weight", sd["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
