"""Tests for moaa_ray.train.collate: assistant-only targets on multi-turn chats, pairs, batching."""

from __future__ import annotations

import logging

import pytest
import torch

from moaa_ray.tiny_models import CHATML_TEMPLATE, resolve_model_path
from moaa_ray.train.collate import (
    assistant_mask,
    collate,
    encode_conversation,
    encode_preference,
    keep_trainable,
    warn_dropped_rows,
)
from moaa_ray.train.losses import IGNORE_INDEX, sequence_logprobs, token_logprobs

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Why is the sky blue?"},
    {"role": "assistant", "content": "Because of scattering."},
]


@pytest.fixture(scope="module")
def model_dir():
    return resolve_model_path("tiny:llama-a")


@pytest.fixture()
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _trained_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example.targets if t != IGNORE_INDEX])


def test_only_assistant_turns_are_trained_in_a_multi_turn_chat(tokenizer):
    example = encode_conversation(tokenizer, CHAT, max_seq_len=512)
    assert len(example.targets) == len(example.input_ids)
    assert _trained_text(tokenizer, example) == "Hello!<|im_end|>Because of scattering.<|im_end|>"
    # Each target is the next input token (targets are pre-shifted), the last one is ignored.
    for t, target in enumerate(example.targets[:-1]):
        assert target in (IGNORE_INDEX, example.input_ids[t + 1])
    assert example.targets[-1] == IGNORE_INDEX


def test_templates_without_generation_markers_locate_turns_by_prefix(tokenizer):
    marked_ids, marked = assistant_mask(tokenizer, CHAT)
    tokenizer.chat_template = CHATML_TEMPLATE.replace("{% generation %}", "").replace(
        "{% endgeneration %}", ""
    )
    ids, mask = assistant_mask(tokenizer, CHAT)
    assert ids == marked_ids
    assert tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m]) == (
        "Hello!<|im_end|>\nBecause of scattering.<|im_end|>\n"
    )
    assert all(m for m, k in zip(mask, marked, strict=True) if k)  # a superset: the newline too


def test_a_template_that_rewrites_earlier_turns_is_rejected(tokenizer):
    # Like templates that drop earlier reasoning: an assistant turn renders differently once it
    # is no longer last, so no token span belongs to it.
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: "
        "{% if m['role'] == 'assistant' and not loop.last %}...{% else %}{{ m['content'] }}{% endif %}"
        "\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(ValueError, match="generation"):
        encode_conversation(tokenizer, CHAT, max_seq_len=512)


def test_a_conversation_without_an_answer_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="no assistant turn"):
        encode_conversation(tokenizer, CHAT[:2], max_seq_len=512)


def test_long_conversations_are_cut_to_max_seq_len(tokenizer):
    example = encode_conversation(tokenizer, CHAT, max_seq_len=30)
    assert len(example.input_ids) == len(example.targets) == 30
    assert example.targets[-1] == IGNORE_INDEX


def test_preference_pairs_train_only_the_final_answer(tokenizer):
    prompt = CHAT[:4]  # multi-turn prompt with an earlier assistant turn
    chosen = [{"role": "assistant", "content": "Rayleigh scattering."}]
    rejected = [{"role": "assistant", "content": "It is painted."}]
    good, bad = encode_preference(tokenizer, prompt, chosen, rejected, max_seq_len=512)
    assert _trained_text(tokenizer, good) == "Rayleigh scattering.<|im_end|>"
    assert _trained_text(tokenizer, bad) == "It is painted.<|im_end|>"
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
    assert good.input_ids[: len(prompt_ids)] == bad.input_ids[: len(prompt_ids)]
    with pytest.raises(ValueError, match="assistant"):
        encode_preference(tokenizer, prompt, [{"role": "user", "content": "x"}], rejected, 512)


LONG_PROMPT = [{"role": "user", "content": "Why is the sky blue? " + "Tell me more. " * 40}]
CHOSEN = [{"role": "assistant", "content": "Rayleigh scattering."}]
REJECTED = [{"role": "assistant", "content": "It is painted."}]


def test_a_long_prompt_is_cut_from_the_left_and_the_answers_survive(tokenizer):
    uncut = encode_preference(tokenizer, LONG_PROMPT, CHOSEN, REJECTED, max_seq_len=512)
    prompt = tokenizer.apply_chat_template(
        LONG_PROMPT, add_generation_prompt=True, return_dict=True
    )
    prompt_len = len(prompt["input_ids"])
    assert prompt_len > 64
    # Cut at the end only, the prompt fills the window and nothing is trained.
    lost = encode_preference(tokenizer, LONG_PROMPT, CHOSEN, REJECTED, max_seq_len=64)
    assert _trained_text(tokenizer, lost[0]) == ""
    good, bad = encode_preference(
        tokenizer, LONG_PROMPT, CHOSEN, REJECTED, max_seq_len=64, max_prompt_length=32
    )
    assert _trained_text(tokenizer, good) == "Rayleigh scattering.<|im_end|>"
    assert _trained_text(tokenizer, bad) == "It is painted.<|im_end|>"
    # The prompt keeps its last 32 tokens: its end (the generation prompt) is there, its start not.
    assert good.input_ids[:32] == uncut[0].input_ids[prompt_len - 32 : prompt_len]
    assert tokenizer.decode(good.input_ids[:32]).endswith("<|im_start|>assistant\n")


def test_a_long_sft_prompt_is_cut_from_the_left_and_the_answer_survives(tokenizer):
    example = encode_conversation(
        tokenizer, LONG_PROMPT + CHOSEN, max_seq_len=64, max_prompt_length=32
    )
    assert _trained_text(tokenizer, example) == "Rayleigh scattering.<|im_end|>"
    assert "Why is the sky blue" not in tokenizer.decode(example.input_ids)


def test_rows_with_nothing_to_train_are_dropped_and_counted(tokenizer):
    short = {"prompt": CHAT[1:2], "chosen": CHOSEN, "rejected": REJECTED}
    long = {"prompt": LONG_PROMPT, "chosen": CHOSEN, "rejected": REJECTED}

    def encode(row):
        return encode_preference(tokenizer, row["prompt"], row["chosen"], row["rejected"], 64)

    kept, dropped = keep_trainable([short, long, short], encode)
    assert (kept, dropped) == ([short, short], 1)
    assert keep_trainable([long], encode) == ([], 1)


def test_dropping_over_one_percent_of_rows_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="moaa_ray.train.collate"):
        assert not warn_dropped_rows("sft", 1, 100)  # 1 of 100 is not over 1%
        assert not warn_dropped_rows("sft", 0, 0)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="moaa_ray.train.collate"):
        assert warn_dropped_rows("dpo", 1, 99)
    assert "dpo: dropped 1 of 99 rows" in caplog.text


def test_padded_batch_shapes_and_segments(tokenizer):
    examples = [
        encode_conversation(tokenizer, CHAT, 512),
        encode_conversation(tokenizer, CHAT[1:3], 512),
    ]
    batch = collate(examples, tokenizer.pad_token_id, packed=False)
    short = len(examples[1].input_ids)
    assert batch.inputs["input_ids"].shape == (2, len(examples[0].input_ids))
    assert batch.inputs["attention_mask"][1].sum().item() == short
    assert (batch.segment_ids[1, short:] == -1).all()
    assert (batch.targets[1, short:] == IGNORE_INDEX).all()
    assert batch.num_tokens == sum(len(e.input_ids) for e in examples)


def test_packed_rows_score_each_sequence_as_if_it_were_alone(tokenizer, model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    examples = [
        encode_conversation(tokenizer, CHAT, 512),
        encode_conversation(tokenizer, CHAT[1:3], 512),
        encode_conversation(tokenizer, CHAT[:1] + CHAT[3:], 512),
    ]
    scores = {}
    with torch.no_grad():
        for packed in (False, True):
            batch = collate(examples, tokenizer.pad_token_id, packed)
            assert ("position_ids" in batch.inputs) is packed
            logits = model(**batch.inputs, use_cache=False).logits
            logps = token_logprobs(logits, batch.targets)
            scores[packed] = sequence_logprobs(logps, batch.targets, batch.segment_ids, 3)
    assert batch.inputs["input_ids"].shape == (1, batch.num_tokens)
    assert torch.allclose(scores[True], scores[False], atol=1e-4)
    assert (scores[True] < 0).all()


@pytest.mark.parametrize("family", ["gemma-style", "mistral-style"])
def test_a_system_turn_is_trained_on_under_templates_of_other_families(family):
    from transformers import AutoTokenizer

    strict = AutoTokenizer.from_pretrained(resolve_model_path(f"tiny:{family}"))
    example = encode_conversation(strict, CHAT, max_seq_len=512)  # CHAT opens with a system turn
    assert "Be brief." in strict.decode(example.input_ids)
    assert _trained_text(strict, example).startswith("Hello!")
    assert "Be brief." not in _trained_text(strict, example)
    chosen, rejected = encode_preference(
        strict, CHAT[:2], [CHAT[2]], [{"role": "assistant", "content": "No."}], max_seq_len=512
    )
    assert _trained_text(strict, chosen).startswith("Hello!")
    assert _trained_text(strict, rejected).startswith("No.")
