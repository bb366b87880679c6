"""Tests for moaa_ray.engines.choice_tokens: the verdict tokens each kind of tokenizer really writes."""

from __future__ import annotations

import string

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from moaa_ray.engines.choice_tokens import plan_choices
from moaa_ray.tasks.addition_models import build_task_tokenizer
from moaa_ray.tiny_models import build_tokenizer

PROMPT = "Which answer is better?\nVerdict: "


def sentencepiece(with_spaced_letters: bool) -> Tokenizer:
    """A SentencePiece-style unigram tokenizer (a space is "▁", as in Llama 2, Mistral and Gemma);
    with or without the whole pieces "▁A" and "▁B"."""
    pieces = [("<unk>", 0.0), ("▁", -3.0), ("▁Verdict", -1.0)]
    pieces += [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    if with_spaced_letters:
        pieces += [("▁A", -1.5), ("▁B", -1.5)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=0))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    return tokenizer


def tokenizers(tmp_path) -> dict:
    """``(encode, id_to_token)`` of each kind of tokenizer."""
    bpe = build_tokenizer(tmp_path)  # the tiny models' byte-level BPE (GPT-2 / Qwen style)
    characters = build_task_tokenizer()  # the addition task models' characters
    spaced, unspaced = sentencepiece(True), sentencepiece(False)
    return {
        "byte-level BPE": (
            lambda text: bpe.encode(text, add_special_tokens=False),
            bpe.convert_ids_to_tokens,
        ),
        "characters": (
            lambda text: characters.encode(text, add_special_tokens=False),
            characters.convert_ids_to_tokens,
        ),
        "sentencepiece with ▁A": (lambda text: spaced.encode(text).ids, spaced.id_to_token),
        "sentencepiece without ▁A": (lambda text: unspaced.encode(text).ids, unspaced.id_to_token),
    }


def read_verdicts(encode, prompt=PROMPT, choices=("A", "B")):
    sequences, reads = plan_choices(
        [encode(prompt)], [[encode(prompt + c)] for c in choices], choices
    )
    return sequences, reads[0]


@pytest.mark.parametrize(
    ("kind", "tokens_of_a", "tokens_of_b", "context_ends_with"),
    [
        ("byte-level BPE", ["ĠA"], ["ĠB"], ":"),
        ("characters", ["A"], ["B"], " "),
        ("sentencepiece with ▁A", ["▁A"], ["▁B"], ":"),
        ("sentencepiece without ▁A", ["A"], ["B"], "▁"),
    ],
)
def test_verdicts_are_read_as_the_tokenizer_writes_prompt_and_choice(
    tmp_path, kind, tokens_of_a, tokens_of_b, context_ends_with
):
    encode, to_token = tokenizers(tmp_path)[kind]
    sequences, (a, b) = read_verdicts(encode)
    assert [to_token(t) for t in a.tokens] == tokens_of_a
    assert [to_token(t) for t in b.tokens] == tokens_of_b
    # Both are read after the same tokens, so they are probabilities of the same event.
    assert a.start == b.start
    assert to_token(sequences[a.sequence][a.start - 1]) == context_ends_with
    assert sequences[a.sequence][: a.start] == sequences[b.sequence][: b.start]


def test_verdict_choices_share_one_sequence_when_the_vocabulary_has_both_spaced_letters(tmp_path):
    encode, _ = tokenizers(tmp_path)["sentencepiece with ▁A"]
    sequences, (a, b) = read_verdicts(encode)
    assert len(sequences) == 1 and a.sequence == b.sequence == 0


def test_choices_with_the_same_first_character_may_read_the_same_token(tmp_path):
    encode, _ = tokenizers(tmp_path)["characters"]  # splits "10" into "1" "0", as Qwen does
    _, (one, ten) = read_verdicts(encode, "Rating: [[", ("1", "10"))
    assert one == ten


def test_a_choice_that_adds_no_token_is_refused(tmp_path):
    encode, _ = tokenizers(tmp_path)["characters"]
    with pytest.raises(ValueError, match="adds no token"):
        read_verdicts(encode, choices=("A", ""))
