"""Tests for moaa_ray.engines.pairrm and moaa_ray.pairrm_model on a tiny random checkpoint in
PairRM's published layout."""

from __future__ import annotations

import json

import pytest
import torch

from moaa_ray.config import ModelConfig
from moaa_ray.engines.factory import build_engine
from moaa_ray.engines.pairrm import PairRMEngine
from moaa_ray.pairrm_model import (
    CANDIDATE1,
    CANDIDATE2,
    SOURCE,
    DebertaV2PairRM,
    encode_pair,
    source_text,
)
from moaa_ray.tiny_models import resolve_model_path

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return resolve_model_path("tiny:pairrm-f", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def engine(checkpoint):
    return build_engine(ModelConfig(engine="pairrm", path=checkpoint))


def test_the_tiny_checkpoint_has_the_published_layout(checkpoint):
    config = json.loads(open(f"{checkpoint}/config.json").read())
    assert config["architectures"] == ["DebertaV2PairRM"] and config["model_type"] == "deberta-v2"
    assert config["n_tasks"] == 1 and config["relative_attention"] is True
    model, info = DebertaV2PairRM.from_pretrained(checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    names = set(model.state_dict())
    assert {n for n in names if n.startswith("head_layer.")} == {
        "head_layer.1.weight", "head_layer.1.bias", "head_layer.4.weight", "head_layer.4.bias"
    }  # fmt: skip
    assert all(n.startswith(("pretrained_model.", "head_layer.")) for n in names)


def test_a_pair_is_encoded_in_the_model_cards_format(engine):
    tokenizer = engine.tokenizer
    ids = encode_pair(tokenizer, "Hi there", "Fine", "Bad")
    # The PairRM-hf card's tokenize_pair: each part encoded on its own, with [CLS] ... [SEP].
    expected = sum(
        (tokenizer.encode(prefix + text) for prefix, text in
         ((SOURCE, "Hi there"), (CANDIDATE1, "Fine"), (CANDIDATE2, "Bad"))),
        [],
    )  # fmt: skip
    assert ids == expected
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert [tokens.count(m) for m in (SOURCE, CANDIDATE1, CANDIDATE2)] == [1, 1, 1]
    assert tokens.count("[CLS]") == tokens.count("[SEP]") == 3


def test_long_parts_are_cut_to_llm_blenders_budget(engine):
    tokenizer = engine.tokenizer
    ids = encode_pair(tokenizer, "a" * 50, "b" * 50, "c" * 50, 10, 8)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    starts = [i for i, t in enumerate(tokens) if t == "[CLS]"] + [len(tokens)]
    lengths = [end - start for start, end in zip(starts, starts[1:], strict=False)]
    # The source keeps 10 tokens; each candidate half of what it leaves of 10 + 2 * 8.
    assert lengths == [10, 8, 8]
    assert tokens[-1] == "[SEP]" and tokens[starts[2] + 1] == CANDIDATE2


def test_compare_is_the_head_score_difference_of_the_two_candidates(engine):
    answers = [(QUESTION, "4", "5"), (QUESTION, "5", "4"), (QUESTION, "four", "<|candidate1|> 4")]
    logits = engine.compare(answers)
    assert len(logits) == 3 and logits[0] != logits[1]  # each order is a sequence of its own
    model, tokenizer = engine.model, engine.tokenizer
    ids = torch.tensor([encode_pair(tokenizer, "What is 2 + 2?", "4", "5")])
    with torch.no_grad():
        states = model.pretrained_model(input_ids=ids).last_hidden_state[0]
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    source, first, second = (states[tokens.index(m)] for m in (SOURCE, CANDIDATE1, CANDIDATE2))
    with torch.no_grad():
        head = [model.head_layer(torch.cat([source, c])) for c in (first, second)]
    assert logits[0] == pytest.approx((head[0] - head[1]).item(), abs=1e-5)


def test_the_source_is_the_request_or_the_whole_conversation():
    assert source_text(QUESTION) == "What is 2 + 2?"
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye?"},
    ]
    assert source_text(turns) == "SYSTEM: Be brief.\nUSER: Hi\nASSISTANT: Hello\nUSER: Bye?"


def test_a_tokenizer_whose_markers_the_model_does_not_know_is_refused(checkpoint, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    config = json.loads((broken / "config.json").read_text())
    config["source_prefix_id"] = 3
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="the model expects"):
        PairRMEngine(ModelConfig(engine="pairrm", path=str(broken)))
