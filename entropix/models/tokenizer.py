"""Tokenizers for loaded checkpoints: byte-level BPE from GGUF metadata, or a tokenizer.json.

From GGUF (``tokenizer.ggml.model == "gpt2"``, byte-level BPE): the vocabulary is
``tokenizer.ggml.tokens`` (id = index), merges are ``tokenizer.ggml.merges`` ("a b" strings, in
priority order), tokens of type CONTROL (3) become special added tokens and USER_DEFINED (4)
plain added tokens. The pre-tokenizer follows ``tokenizer.ggml.pre``: "gpt2"/"default" = the
GPT-2 split regex + byte-level mapping; "smollm" = every digit split off first, then the same.
BOS is prepended when ``tokenizer.ggml.add_bos_token`` is true. The chat template
(``tokenizer.chat_template``) is rendered with a sandboxed jinja2 environment.

From a Hugging Face directory: ``tokenizer.json`` (the ``tokenizers`` backend, with its own
pre/post-processing), special tokens from ``tokenizer_config.json``, and the chat template from
``chat_template.jinja`` (what transformers v5 writes) or ``tokenizer_config.json``'s
``chat_template`` (v4; a string, or a list of named templates of which "default" is used).

Chat templates render as transformers' ``apply_chat_template`` does (its documented
environment): a sandboxed jinja2 environment with ``trim_blocks``, ``lstrip_blocks`` and the
loop-controls extension; ``raise_exception(message)``, ``strftime_now(format)`` and a ``tojson``
filter that is ``json.dumps`` (no HTML escaping, ``ensure_ascii=False``); the special tokens
``bos_token``, ``eos_token``, ``pad_token`` as strings; extra keyword arguments (e.g.
``enable_thinking`` for Qwen3) as template variables.
"""

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entropix.models.loaders import ModelFileError, open_gguf

if TYPE_CHECKING:
    import gguf
    import tokenizers

_CONTROL, _USER_DEFINED = 3, 4
_PRE_TOKENIZERS = ("default", "gpt2", "smollm")
CHAT_TEMPLATE_FILE = "chat_template.jinja"


@dataclasses.dataclass
class Tokenizer:
    """A ``tokenizers.Tokenizer`` with the checkpoint's special ids and chat template."""

    backend: "tokenizers.Tokenizer"
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    chat_template: str | None = None
    source: Path | None = None  # the HF directory it was read from (its files are exported)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (BOS added if the checkpoint asks for it).

        Args:
            text: the string to tokenize.
            add_special_tokens: whether the backend's post-processor may add BOS etc.;
                default True.

        Returns:
            The token ids, in order.
        """
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """The text of token ids.

        Args:
            ids: token ids (ints, or a 1-D integer array).
            skip_special_tokens: whether special tokens (BOS, EOS, chat markers) are left out;
                default True.

        Returns:
            The decoded string.
        """
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def encode_batch(
        self, texts: Sequence[str], add_special_tokens: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded int32 ids [B, T] and bool mask [B, T] for ``generate``.

        Args:
            texts: the B strings to tokenize.
            add_special_tokens: as in :meth:`encode`; default True.

        Returns:
            ``(ids, mask)``: int32 [B, T] ids padded on the left with ``pad_id`` (0 when None)
            and bool [B, T], True on real tokens; T = the longest row (at least 1).
        """
        rows = [self.encode(t, add_special_tokens) for t in texts]
        width = max(1, max(len(r) for r in rows))
        pad = 0 if self.pad_id is None else self.pad_id
        ids = np.full((len(rows), width), pad, np.int32)
        mask = np.zeros((len(rows), width), bool)
        for i, row in enumerate(rows):
            if row:
                ids[i, width - len(row) :] = row
                mask[i, width - len(row) :] = True
        return ids, mask

    def apply_chat_template(
        self, messages: Sequence[dict], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render ``messages`` ([{"role", "content"}]) with the checkpoint's chat template.

        ``kwargs`` become template variables (``tools``, ``enable_thinking``, ...).

        Args:
            messages: the conversation, dicts with ``"role"`` and ``"content"``.
            add_generation_prompt: whether to end with the assistant turn's opening;
                default True.
            **kwargs: extra template variables.

        Returns:
            The rendered prompt text (``ValueError`` if the tokenizer has no chat template).
        """
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template")
        token = lambda i: None if i is None else self.backend.id_to_token(i)
        special = {"bos_token": token(self.bos_id) or "", "eos_token": token(self.eos_id) or ""}
        if self.pad_id is not None:
            special["pad_token"] = token(self.pad_id)
        return (
            _chat_environment()
            .from_string(self.chat_template)
            .render(
                messages=messages, add_generation_prompt=add_generation_prompt, **special, **kwargs
            )
        )


def _chat_environment():
    """The jinja2 environment chat templates are written for (see the module docstring)."""
    import datetime

    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
            sort_keys=sort_keys,
        )  # fmt: skip

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


def _byte_level_bpe(tokens, merges, pre: str, source: str):
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    if pre not in _PRE_TOKENIZERS:
        raise ModelFileError(
            f"{source}: pre-tokenizer {pre!r} is not supported (supported: {_PRE_TOKENIZERS})"
        )
    vocab = {token: i for i, token in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    backend = Backend(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    return backend


def tokenizer_from_gguf(path_or_reader: "str | Path | gguf.GGUFReader") -> Tokenizer:
    """The tokenizer stored in a GGUF file's metadata (byte-level BPE only).

    Args:
        path_or_reader: the ``.gguf`` file, or a reader from ``open_gguf``.

    Returns:
        The tokenizer with the file's BOS/EOS/pad ids and chat template (``source`` None).
    """
    from tokenizers import AddedToken, processors

    if isinstance(path_or_reader, str | Path):
        source, reader = str(path_or_reader), open_gguf(path_or_reader)
    else:
        source, reader = "<gguf>", path_or_reader
    fields = reader.fields

    def field(name, default=None):
        return fields[name].contents() if name in fields else default

    kind = field("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelFileError(
            f"{source}: tokenizer model {kind!r} is not supported (only byte-level BPE 'gpt2')"
        )
    tokens = field("tokenizer.ggml.tokens")
    backend = _byte_level_bpe(
        tokens, field("tokenizer.ggml.merges", []), field("tokenizer.ggml.pre", "default"), source
    )
    types = field("tokenizer.ggml.token_type", [])
    backend.add_tokens(
        [
            AddedToken(tokens[i], special=t == _CONTROL, normalized=False)
            for i, t in enumerate(types)
            if t in (_CONTROL, _USER_DEFINED)
        ]
    )
    bos = field("tokenizer.ggml.bos_token_id")
    if field("tokenizer.ggml.add_bos_token", False) and bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A",
            pair=f"{tokens[bos]} $A $B",
            special_tokens=[(tokens[bos], bos)],
        )
    return Tokenizer(
        backend,
        bos_id=bos,
        eos_id=field("tokenizer.ggml.eos_token_id"),
        pad_id=field("tokenizer.ggml.padding_token_id"),
        chat_template=field("tokenizer.chat_template"),
    )


def tokenizer_from_hf(directory: str | Path) -> Tokenizer:
    """``tokenizer.json`` (+ ``tokenizer_config.json`` for special tokens and chat template).

    Args:
        directory: a Hugging Face checkpoint or tokenizer directory.

    Returns:
        The tokenizer, with ``source`` set to ``directory`` (its files are copied on export).
    """
    from tokenizers import Tokenizer as Backend

    directory = Path(directory)
    path = directory / "tokenizer.json"
    if not path.exists():
        raise ModelFileError(f"{path}: tokenizer.json not found")
    backend = Backend.from_file(str(path))
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
        template = {t["name"]: t["template"] for t in template}.get("default")
    if (directory / CHAT_TEMPLATE_FILE).exists():
        template = (directory / CHAT_TEMPLATE_FILE).read_text()

    def special(name):
        token = config.get(name)
        token = token.get("content") if isinstance(token, dict) else token
        return None if token is None else backend.token_to_id(token)

    return Tokenizer(
        backend,
        bos_id=special("bos_token"),
        eos_id=special("eos_token"),
        pad_id=special("pad_token"),
        chat_template=template,
        source=directory,
    )


def load_tokenizer(path: str | Path) -> Tokenizer:
    """``tokenizer_from_gguf`` for a ``.gguf`` file, ``tokenizer_from_hf`` for a directory.

    Args:
        path: a ``.gguf`` file or a directory holding ``tokenizer.json``.

    Returns:
        The loaded tokenizer.
    """
    path = Path(path)
    if path.suffix == ".gguf":
        return tokenizer_from_gguf(path)
    if path.is_dir():
        return tokenizer_from_hf(path)
    raise ModelFileError(f"{path}: expected a .gguf file or a directory with tokenizer.json")
