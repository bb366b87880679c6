"""llm-blender's own code (``llm-blender==0.0.2``, the ``test`` extra) as the oracle of the PairRM
engine (moaa_ray.engines.pairrm, moaa_ray.pairrm_model) and of the rewards the preference stage
gives its comparisons, on the tiny random checkpoint ``tiny:pairrm-f``.

llm-blender runs here through its public API: ``Blender.loadranker`` loads the checkpoint as it
loads ``llm-blender/PairRM`` (a ``RankerConfig`` ``config.json`` beside the weights: its
``CrossCompareReranker``, ``CrossCompareCollator`` and ``RankerDataset``), and ``compare``,
``compare_conversations`` and ``rank`` give their logits, the token ids they feed the encoder
(read by a forward pre-hook) and ranking scores (``get_scores_from_cmps``). Its
``pair_ranker.pairrm.DebertaV2PairRM``, the module of the ``llm-blender/PairRM-hf`` layout, loads the
checkpoint as it is. The package predates transformers 5, and two of the names it uses are gone:

- ``transformers.utils.hub.TRANSFORMERS_CACHE``, imported by ``llm_blender/blender/blender.py`` and
  ``blender_utils.py`` (so ``import llm_blender`` fails): set, for the import only, to the hub
  cache, which it was an alias of (``loadranker``'s default ``cache_dir``, unused for a local path);
- the tokenizer method ``batch_encode_plus``, called by the collator (``encode_texts``): on the
  ranker's tokenizer, the tokenizer's ``__call__``, which it was the batch form of.

What stays untested: a text holding a marker or ``[SEP]`` (llm-blender turns ``[SEP]`` into a
space and reads a ``<|candidate|>`` in a candidate as its marker; the engine turns the markers
into spaces), and a batch whose sources are cut at different lengths (llm-blender gives every
candidate of a batch the budget its longest source leaves; the engine gives each pair its own, as
llm-blender does for a batch of one).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
import transformers.utils.hub
from huggingface_hub import constants
from safetensors.torch import load_file, save_file

from moaa_ray.config import ModelConfig
from moaa_ray.core.general_preference import mean_score_differences
from moaa_ray.core.tournament import new_tournament, record_samples
from moaa_ray.engines.factory import build_engine
from moaa_ray.pairrm_model import comparison_texts, encode_pair
from moaa_ray.pipeline.preference_graph import RewardModelStep
from moaa_ray.pools.dispatch import Completion
from moaa_ray.tiny_models import resolve_model_path

with mock.patch.object(
    transformers.utils.hub, "TRANSFORMERS_CACHE", constants.HF_HUB_CACHE, create=True
):
    llm_blender = pytest.importorskip("llm_blender")
from llm_blender.gpt_eval.utils import get_scores_from_cmps  # noqa: E402
from llm_blender.pair_ranker.pairrm import DebertaV2PairRM as HFLayoutPairRM  # noqa: E402

# dataclasses_json warns of RankerConfig's None defaults (cache_dir, device) as it reads one.
pytestmark = pytest.mark.filterwarnings("ignore:.*when decoding RankerConfig:RuntimeWarning")

QUESTION = "What is 2 + 2?"
ANSWERS = ["4", "5", "four", "It is four, since 2 + 2 = 4."]
# A conversation before its answers, as the engine takes it (lower-case roles, ends with a user).
TURNS = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And times 3?"},
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return Path(resolve_model_path("tiny:pairrm-f", tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def engine(checkpoint):
    return build_engine(ModelConfig(engine="pairrm", path=str(checkpoint)))


@pytest.fixture(scope="module")
def blender(checkpoint, tmp_path_factory):
    """llm-blender's ``Blender`` with the checkpoint loaded by ``loadranker`` on CPU, in fp32.

    The ranker folder is laid out as ``llm-blender/PairRM`` is: a ``RankerConfig`` and the
    ranker's weights (``pretrained_model.*``, ``head_layer.*``: the checkpoint's file as it is),
    the backbone named by ``model_name`` (there ``microsoft/deberta-v3-large``; here the
    checkpoint's encoder, config and tokenizer).
    """
    root = tmp_path_factory.mktemp("llm_blender")
    backbone, ranker = root / "backbone", root / "ranker"
    backbone.mkdir()
    ranker.mkdir()
    weights = load_file(checkpoint / "model.safetensors")
    prefix = "pretrained_model."
    encoder = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    save_file(encoder, backbone / "model.safetensors", metadata={"format": "pt"})
    for path in checkpoint.iterdir():  # its config and tokenizer files
        if path.name != "model.safetensors":
            (backbone / path.name).write_bytes(path.read_bytes())
    save_file(weights, ranker / "model.safetensors", metadata={"format": "pt"})
    ranker_config = {
        "ranker_type": "pairranker",
        "model_type": "deberta",
        "model_name": str(backbone),
        "source_maxlength": 1224,
        "candidate_maxlength": 412,
    }
    (ranker / "config.json").write_text(json.dumps(ranker_config))
    blender = llm_blender.Blender()
    blender.blender_config.use_tqdm = False
    blender.loadranker(str(ranker), device="cpu", cache_dir=str(root / "cache"))
    # transformers 5 has no batch_encode_plus; __call__ is what it was the batch form of.
    blender.ranker_tokenizer.batch_encode_plus = blender.ranker_tokenizer.__call__
    return blender


class EncoderInputs:
    """The token ids llm-blender's ranker feeds its encoder, per call, without padding."""

    def __init__(self, blender):
        self.rows: list[list[int]] = []
        self.handle = blender.ranker.pretrained_model.register_forward_pre_hook(
            self._record, with_kwargs=True
        )

    def _record(self, module, args, kwargs):
        for ids, mask in zip(kwargs["input_ids"], kwargs["attention_mask"], strict=True):
            self.rows.append(ids[mask.bool()].tolist())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def blender_conversation(turns: list[dict], answer: str) -> list[dict]:
    """A conversation and its answer as ``compare_conversations`` takes it (``USER``/``ASSISTANT``)."""
    return [{"role": m["role"].upper(), "content": m["content"]} for m in turns] + [
        {"role": "ASSISTANT", "content": answer}
    ]


def test_llm_blender_loads_every_weight_of_the_checkpoint(blender, checkpoint):
    """``loadranker`` reads the file with ``safetensors.torch.load_model`` (strict: every key the
    ranker has, no other) and keeps fp32 on CPU; its PairRM-hf module loads it with nothing left
    out."""
    weights = load_file(checkpoint / "model.safetensors")
    state = blender.ranker.state_dict()
    assert set(state) == set(weights)
    assert all(torch.equal(state[name], tensor) for name, tensor in weights.items())
    assert blender.ranker_config.ranker_type == "pairranker"
    assert all(p.dtype == torch.float32 for p in blender.ranker.parameters())
    _, info = HFLayoutPairRM.from_pretrained(checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.parametrize(
    ("source", "first", "second"),
    [
        (QUESTION, "4", "5"),
        (QUESTION, ANSWERS[3], ANSWERS[2]),
        ("Write a haiku.\n\nAbout the sea.", "Waves fold into foam", "  The  sea.\n"),
    ],
)
def test_a_one_turn_pair_is_the_token_ids_llm_blenders_compare_feeds_its_encoder(
    blender, engine, source, first, second
):
    with EncoderInputs(blender) as fed:
        blender.compare([source], [first], [second], mode="[A,B]", batch_size=1)
    conversation = [{"role": "user", "content": source}]
    ids = encode_pair(engine.tokenizer, *comparison_texts(conversation, first, second))
    assert fed.rows == [ids]


def test_long_parts_are_cut_as_llm_blenders_collator_cuts_them(blender, engine):
    """``rank``'s ``source_max_length`` and ``candidate_max_length``: a long source keeps 10 tokens
    and each candidate 8; a short one leaves the candidates half of what it does not use."""
    lengths = []
    for source in ("a" * 50, "ab"):
        with EncoderInputs(blender) as fed:
            blender.rank(
                [source], [["b" * 50, "c" * 40]], source_max_length=10, candidate_max_length=8
            )
        assert fed.rows == [  # _full_predict: (0, 1), then (1, 0)
            encode_pair(engine.tokenizer, source, "b" * 50, "c" * 40, 10, 8),
            encode_pair(engine.tokenizer, source, "c" * 40, "b" * 50, 10, 8),
        ]
        lengths.append(len(fed.rows[0]))
    assert lengths == [10 + 8 + 8, 5 + 2 * (8 + (10 - 5) // 2)]


@pytest.mark.parametrize("user_turns", [2, 3])
def test_a_conversation_is_the_token_ids_of_llm_blenders_compare_conversations(
    blender, engine, user_turns
):
    """``Blender.compare_conversations`` builds the source (its instruction, the user turns) and
    the candidates (every assistant turn) that ``comparison_texts`` mirrors."""
    turns = TURNS[: 2 * user_turns - 1]
    with EncoderInputs(blender) as fed:
        blender.compare_conversations(
            [blender_conversation(turns, "12")],
            [blender_conversation(turns, "It is 12.")],
            mode="[A,B]",
        )
    assert fed.rows == [encode_pair(engine.tokenizer, *comparison_texts(turns, "12", "It is 12."))]


# A random checkpoint's logit is mostly the answers' order: the logits of these pairs lie within
# about 3e-5 of each other, the rewards (differences of two logits) within about 1e-5. A pair run on
# its own reads the same sequence in the same shapes on both sides, so the numbers agree to the
# bit; in a padded batch, float32 sums of other lengths move a logit by about 3e-8.
ALONE, PADDED = 1e-9, 1e-6


def pairs_to_compare() -> list[tuple[list[dict], str, str]]:
    """Every ordered pair of ``ANSWERS`` to ``QUESTION``, and a pair of answers to ``TURNS``."""
    question = [{"role": "user", "content": QUESTION}]
    items = [(question, a, b) for a in ANSWERS for b in ANSWERS if a != b]
    return [*items, (TURNS, "12", "It is 12."), (TURNS, "It is 12.", "12")]


def test_compare_gives_llm_blenders_logits(blender, engine, checkpoint):
    """``Blender.compare(..., mode="[A,B]", return_logits=True)`` (its ``CrossCompareReranker``)
    against the engine's ``compare``, a pair at a time and in batches of unequal lengths (each side
    pads its own way); llm-blender's ``DebertaV2PairRM`` (the PairRM-hf module) over the engine's
    padded token ids."""
    items = pairs_to_compare()
    texts = [comparison_texts(*item) for item in items]
    sources, firsts, seconds = ([t[n] for t in texts] for n in range(3))
    alone = np.array([engine.compare([item])[0] for item in items])
    theirs = blender.compare(
        sources, firsts, seconds, mode="[A,B]", return_logits=True, batch_size=1
    )
    np.testing.assert_allclose(alone, theirs, rtol=0, atol=ALONE)
    batched = np.array(engine.compare(items))
    theirs = blender.compare(
        sources, firsts, seconds, mode="[A,B]", return_logits=True, batch_size=4
    )
    np.testing.assert_allclose(batched, theirs, rtol=0, atol=PADDED)
    hf_layout = HFLayoutPairRM.from_pretrained(checkpoint).eval()
    ids = [encode_pair(engine.tokenizer, *triple) for triple in texts]
    batch = engine.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    with torch.no_grad():
        card = hf_layout(batch["input_ids"], batch["attention_mask"]).logits.numpy()
    np.testing.assert_allclose(batched, card, rtol=0, atol=ALONE)
    assert np.ptp(alone) > 10 * PADDED  # the pairs are told apart well beyond the tolerance


class EnginePool:
    """A pool of the one engine, without Ray: ``compare`` in one batch (as a replica merges the
    calls waiting for it), or a pair at a time (as llm-blender's ``rank`` runs a prompt's pairs)."""

    def __init__(self, engine, alone: bool):
        self.engine, self.alone = engine, alone
        self.name, self.config = "pairrm", SimpleNamespace(engine="pairrm")

    def submit(self, method, items):
        assert method == "compare"
        if self.alone:
            logits = [self.engine.compare([item])[0] for item in items]
        else:
            logits = self.engine.compare(items)
        return [Completion(logit) for logit in logits]

    def collect(self, submitted):
        return submitted


# Rewards: float32 scores of about 1e-6 (llm-blender's) against float64 means of the same logits
# alone; in a batch, a mean of padded logits' differences (about 7e-9 apart).
@pytest.mark.parametrize(("alone", "tolerance"), [(True, 1e-11), (False, 1e-7)])
def test_rewards_are_llm_blenders_ranking_scores(blender, engine, alone, tolerance):
    """``Blender.rank(..., return_scores=True)`` (every ordered pair, ``get_scores_from_cmps``)
    against the preference stage's rewards of the same answers (``RewardModelStep``: the engine's
    K x K table, ``mean_score_differences``)."""
    state = new_tournament("id", [{"role": "user", "content": QUESTION}], "src")
    record_samples(state, ANSWERS)
    RewardModelStep(EnginePool(engine, alone), "pairwise_ranker")([state])
    [theirs] = blender.rank([QUESTION], [ANSWERS], return_scores=True)
    ours = np.array(state["rewards"])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=tolerance)
    assert np.ptp(ours) > 10 * tolerance
    if alone:
        assert np.argsort(ours).tolist() == np.argsort(theirs).tolist()
    # The same table through both score functions: the same scores but for float32's rounding.
    table = state["preference_table"]
    [from_table] = get_scores_from_cmps(np.array([table]))
    np.testing.assert_allclose(mean_score_differences(table), from_table, rtol=1e-6, atol=0)


def test_a_conversations_reward_gap_is_llm_blenders_compare_conversations(blender, engine):
    """``compare_conversations`` in its default mode (``[A,B]+[B,A]``: ``rank`` of the two answers,
    the first score less the second) against the gap of the two rewards the stage gives them."""
    state = new_tournament("id", TURNS, "src")
    record_samples(state, ["12", "It is 12."])
    RewardModelStep(EnginePool(engine, alone=True), "pairwise_ranker")([state])
    [theirs] = blender.compare_conversations(
        [blender_conversation(TURNS, "12")],
        [blender_conversation(TURNS, "It is 12.")],
        return_logits=True,
    )
    first, second = state["rewards"]
    assert first - second == pytest.approx(float(theirs), abs=1e-11)
    assert abs(theirs) > 1e-7
