"""Tests for moaa_ray.engines.pairrm and moaa_ray.pairrm_model on a tiny random checkpoint in
PairRM's published layout."""

from __future__ import annotations

import json

import pytest
import torch

from moaa_ray.config import ModelConfig
from moaa_ray.engines.factory import build_engine
from moaa_ray.engines.pairrm import PairRMEngine, pairrm_dtype
from moaa_ray.pairrm_model import (
    CANDIDATE1,
    CANDIDATE2,
    SOURCE,
    DebertaV2PairRM,
    comparison_texts,
    encode_pair,
)
from moaa_ray.tiny_models import build_tokenizer, resolve_model_path

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


def test_a_one_turn_request_is_the_source_as_llm_blenders_rank_and_compare_give_it():
    """llm_blender/blender/blender.py, ``Blender.rank`` and ``compare`` without instructions (as
    SPPO's scripts/rank.py calls ``rank``): RankerDataset (blender_utils.py) makes the source
    ``"" + input`` and each candidate its text as is."""
    assert comparison_texts(QUESTION, "4", "5") == ("What is 2 + 2?", "4", "5")
    system = [{"role": "system", "content": "Be brief."}, *QUESTION]  # llm-blender has no system
    assert comparison_texts(system, "4", "5") == ("Be brief.\n\nWhat is 2 + 2?", "4", "5")


def test_a_conversation_is_laid_out_as_llm_blenders_compare_conversations():
    """llm_blender/blender/blender.py, ``Blender.compare_conversations``: the source is its
    instruction (its spelling) joined with no separator (RankerDataset: ``instruction + input``) to
    ``"USER: " + turn + "\\nAssistant: <Response i>"`` lines; each candidate holds every assistant
    turn of its conversation, the earlier ones too, as ``"<Response i>: " + turn`` lines."""
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye?"},
    ]
    source, first, second = comparison_texts(turns, "Bye", "See you")
    assert source == (
        "Finish the following coversation in each i-th turn by filling in <Response i> with your "
        "response.USER: Be brief.\n\nHi\nAssistant: <Response 1>\n"
        "USER: Bye?\nAssistant: <Response 2>"
    )
    assert first == "<Response 1>: Hello\n<Response 2>: Bye"
    assert second == "<Response 1>: Hello\n<Response 2>: See you"
    with pytest.raises(ValueError, match="ending with a user's"):
        comparison_texts(turns[:3], "Bye", "See you")


def test_a_conversation_is_compared_in_the_format_it_is_laid_out_in(engine):
    turns = [*QUESTION, {"role": "assistant", "content": "4"}, {"role": "user", "content": "x2?"}]
    [logit] = engine.compare([(turns, "8", "6")])
    ids = torch.tensor([encode_pair(engine.tokenizer, *comparison_texts(turns, "8", "6"))])
    with torch.no_grad():
        expected = engine.model(ids, torch.ones_like(ids)).item()
    assert logit == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("chat_format", "source"),
    [
        ("mistral", "<s>[INST] What is 2 + 2? [/INST]"),
        ("chatml", "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"),
    ],
)
def test_chat_template_sources_are_sppos_templated_prompts(
    checkpoint, tmp_path, chat_format, source
):
    """SPPO's scripts/rank.py, ``apply_template``: the prompt as the user turn and ``"None"`` as the
    answer in the policy's chat template, cut before ``"None"``; the candidates are the answers."""
    build_tokenizer(tmp_path, chat_format)
    settings = {"source_format": "chat_template", "chat_template_tokenizer": str(tmp_path)}
    engine = PairRMEngine(ModelConfig(engine="pairrm", path=checkpoint, pairrm=settings))
    assert engine.texts(QUESTION, "4", "5") == (source, "4", "5")
    # As there, a "None" in the prompt cuts it (SPPO's split("None")[0]).
    cut = [{"role": "user", "content": "Return None if empty."}]
    assert engine.texts(cut, "a", "b")[0] == source.split("What")[0] + "Return "
    assert len(engine.compare([(QUESTION, "4", "5")])) == 1


def test_pairrm_runs_in_fp16_on_gpu_as_llm_blender_loads_it_and_fp32_on_cpu():
    """llm_blender/blender/blender.py, ``Blender.loadranker``: ``half()`` on cuda when
    ``RankerConfig.fp16`` (default True, pair_ranker/config.py), else ``float()``."""
    assert pairrm_dtype("auto", "cuda") == torch.float16
    assert pairrm_dtype("auto", "cpu") == torch.float32
    assert pairrm_dtype("bfloat16", "cuda") == torch.bfloat16  # the model config's dtype rules


def test_a_tokenizer_whose_markers_the_model_does_not_know_is_refused(checkpoint, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    config = json.loads((broken / "config.json").read_text())
    config["source_prefix_id"] = 3
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="the model expects"):
        PairRMEngine(ModelConfig(engine="pairrm", path=str(broken)))
