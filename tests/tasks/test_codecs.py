"""Codecs: prompts into the sequence layout, replies back into text, answer-phase masks."""

import numpy as np
import pytest

from entropix.tasks import Addition
from entropix.tasks.codecs import CharCodec, ChatCodec, encode_answers, encode_prompts, layout_for
from entropix.tasks.tokenizer import EOS, PAD


class _FakeChatTokenizer:
    """Stands in for a checkpoint's tokenizer: one id per character, <eos> = 1."""

    vocab_size, eos_id, pad_id = 200, 1, None

    def encode(self, text, add_special_tokens=True):
        return [ord(c) % 200 for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages):
        return f"<user>{messages[0]['content']}<assistant>"


def test_char_codec_layout_pads_prompts_left_and_answers_right():
    task, codec = Addition(digits=2), CharCodec()
    problems = task.train_problems(0, 5)
    layout = layout_for(codec, problems, new_tokens=4)
    assert layout.prompt_len == max(len(codec.prompt_ids(p)) for p in problems) + 2
    prompts, mask = encode_prompts(codec, problems, layout)
    assert prompts.shape == (5, layout.prompt_len) and mask[:, -1].all() and not mask[:, 0].any()
    for row, m, problem in zip(prompts, mask, problems, strict=True):
        assert codec.tokenizer.decode(row[m]) == problem.prompt
        assert (row[~m] == PAD).all()
    answers, answer_mask = encode_answers(codec, problems, layout)
    for row, m, problem in zip(answers, answer_mask, problems, strict=True):
        assert row[m][-1] == EOS and codec.decode(row) == problem.answer
    with pytest.raises(ValueError, match="raise rollout.max_prompt_tokens"):
        encode_prompts(codec, problems, layout._replace(prompt_len=3))


def test_answer_mask_starts_after_the_marker():
    codec = CharCodec(answer_marker=":")
    row = codec.tokenizer.encode("ab:12", eos=True)
    np.testing.assert_array_equal(codec.answer_mask(row), [0, 0, 0, 1, 1, 1])
    assert CharCodec().answer_mask(row).all()  # no marker: the whole reply is the answer
    assert codec.answer_mask(codec.tokenizer.encode("abc")).sum() == 0  # marker never came


def test_chat_codec_prompt_and_answer_reading():
    task = Addition(digits=2)
    problem = task.train_problems(0, 1)[0]
    codec = ChatCodec(_FakeChatTokenizer(), task.question, after_last_equals=True)
    prompt = _FakeChatTokenizer().decode(codec.prompt_ids(problem))
    assert prompt.startswith("<user>What is ") and prompt.endswith("<assistant>")
    assert codec.answer_ids(problem)[-1] == 1 and codec.pad_id == 0
    reply = [ord(c) for c in f"12 + 3 = {problem.answer}."] + [1, 7, 7]
    assert codec.decode(reply) == problem.answer and codec.ended(reply)
    assert not codec.ended(reply[:-3])
    plain = ChatCodec(_FakeChatTokenizer(), task.question, chat_template=False)
    assert plain.decode(reply) == f"12 + 3 = {problem.answer}."  # the full reply
    assert _FakeChatTokenizer().decode(plain.prompt_ids(problem)) == task.question(problem)
