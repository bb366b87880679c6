"""Tests for moaa_ray.engines.gpm and moaa_ray.gpm_model on tiny random checkpoints in GPM's published
layout, against the reference's formulas computed here on the same weights."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from moaa_ray.config import ModelConfig
from moaa_ray.engines.factory import build_engine
from moaa_ray.engines.gpm import GPMEngine
from moaa_ray.gpm_model import build_tiny_gpm, preference_table
from moaa_ray.tiny_models import build_tokenizer, resolve_model_path

ITEMS = [
    ([{"role": "user", "content": "What is 2 + 2?"}], ["4", "5", "four, since 2 + 2 = 4"]),
    (
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Name a color."},
        ],
        ["Blue", "Red, or maybe green"],
    ),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """``tiny:gpm``: a prompt head, value_head_dim 8."""
    return resolve_model_path("tiny:gpm", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def headless(tmp_path_factory):
    """The same layout without a prompt head, value_head_dim 6 (as the GPO scripts' gp_2b)."""
    directory = tmp_path_factory.mktemp("headless")
    tokenizer = build_tokenizer(directory, "gemma")
    build_tiny_gpm(directory, tokenizer, 64, 2, seed=11, value_head_dim=6, prompt_head=False)
    return str(directory)


def reference_table(path, conversation, answers, tau=0.1):
    """rank_gp.py's table, the reference's way (LLM-Alignment/scripts/RMs/reward_model.py): each
    answer alone, the value head over every position and the last one taken, normalised, the prompt
    state at ``length - response length - 1``, R built as a matrix, ``c R^T r / tau``."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    backbone = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).model.eval()
    weights = load_file(f"{path}/model.safetensors")
    value, prompt = weights["value_head.weight"], weights.get("prompt_head.weight")
    dim = value.shape[0]

    def encode(messages):
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        return tokenizer(
            text.replace(tokenizer.bos_token, ""), add_special_tokens=False, return_tensors="pt"
        )

    rewards, prompt_states = [], []
    for answer in answers:
        inputs = encode([*conversation, {"role": "assistant", "content": answer}])
        mask = inputs["attention_mask"]
        with torch.no_grad():
            states = backbone(
                input_ids=inputs["input_ids"], attention_mask=mask, position_ids=mask.cumsum(-1) - 1
            ).last_hidden_state
        rewards.append(F.normalize((states @ value.T)[:, -1, :], p=2, dim=-1))
        response_length = mask.sum() - encode(conversation)["attention_mask"].sum()
        prompt_states.append(states[0, states.shape[1] - response_length - 1])
    table = torch.zeros(len(answers), len(answers))
    for i, j in itertools.permutations(range(len(answers)), 2):
        blocks = torch.ones(dim // 2)
        if prompt is not None:
            blocks = torch.softmax(prompt_states[i] @ prompt.T, dim=-1)
        matrix = torch.zeros(dim, dim)
        for m in range(0, dim, 2):
            matrix[m, m + 1], matrix[m + 1, m] = -blocks[m // 2], blocks[m // 2]
        table[i, j] = (rewards[i] @ matrix.T @ rewards[j].T).item() / tau
    return table.tolist()


def test_the_tiny_checkpoint_has_the_published_layout(checkpoint):
    config = json.loads(open(f"{checkpoint}/config.json").read())
    assert config["model_type"] == "gemma" and config["tie_word_embeddings"] is True
    weights = load_file(f"{checkpoint}/model.safetensors")
    assert [list(weights[n].shape) for n in ("value_head.weight", "prompt_head.weight")] == [
        [8, 64],
        [4, 64],
    ]
    heads = {"value_head.weight", "prompt_head.weight"}
    assert all(name.startswith("model.") for name in set(weights) - heads)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    text = tokenizer.apply_chat_template(ITEMS[0][0], tokenize=False)
    assert text == "<bos><start_of_turn>user\nWhat is 2 + 2?<end_of_turn>\n"


@pytest.mark.parametrize("variant", ["checkpoint", "headless"])
def test_the_table_is_the_references_on_the_same_weights(variant, request):
    path = request.getfixturevalue(variant)
    engine = build_engine(ModelConfig(engine="gpm", path=path))
    assert (engine.model.prompt_head is None) == (variant == "headless")
    tables = engine.preference_table(ITEMS)  # both prompts in one left-padded batch
    for table, (conversation, answers) in zip(tables, ITEMS, strict=True):
        expected = reference_table(path, conversation, answers)
        assert len(table) == len(answers) and len({round(x, 9) for x in table[0]}) == len(answers)
        for row, reference_row in zip(table, expected, strict=True):
            assert row == pytest.approx(reference_row, abs=1e-6)


def test_the_table_is_skew_symmetric_with_a_zero_diagonal(checkpoint):
    [table] = GPMEngine(ModelConfig(engine="gpm", path=checkpoint)).preference_table(ITEMS[:1])
    for i, j in itertools.product(range(3), repeat=2):
        assert table[i][j] == pytest.approx(-table[j][i], abs=1e-7)
    assert [table[i][i] for i in range(3)] == [0.0, 0.0, 0.0]


def test_tau_divides_every_score(checkpoint):
    config = ModelConfig(engine="gpm", path=checkpoint)
    [plain] = build_engine(config).preference_table(ITEMS[:1])
    scaled = config.model_copy(update={"engine_kwargs": {"tau": 0.05}})
    [halved] = build_engine(scaled).preference_table(ITEMS[:1])
    assert halved[0] == pytest.approx([2 * x for x in plain[0]], rel=1e-5)


def test_the_score_is_the_scaled_skew_form_of_the_two_embeddings():
    # Blocks (0, 1) and (2, 3); sample 0 = e0, sample 1 = (e1 + e2) / sqrt 2, scales from each row.
    embeddings = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5**0.5, 0.5**0.5, 0.0]])
    scales = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    table = preference_table(embeddings, scales, tau=0.5).flatten().tolist()
    # s(0 > 1) = 0.25 * (1 * sqrt(1/2) - 0 * 0) / 0.5; s(1 > 0) = 0.5 * (0 * 0 - sqrt(1/2) * 1) / 0.5
    assert table == pytest.approx([0.0, 0.5**0.5 / 2, -(0.5**0.5), 0.0])


def _rewrite(checkpoint, directory, change):
    shutil.copytree(checkpoint, directory)
    weights = load_file(directory / "model.safetensors")
    change(weights)
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    return str(directory)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda w: w.pop("value_head.weight"), "no value_head.weight in its weights: not a GPM"),
        (lambda w: w.update({"value_head.weight": torch.zeros(1, 64)}), "a Bradley-Terry"),
        (lambda w: w.update({"value_head.weight": torch.zeros(5, 64)}), "an even value_head_dim"),
        (lambda w: w.update({"prompt_head.weight": torch.zeros(3, 64)}), r"GPM's is .*\[4, 64\]"),
    ],
)
def test_a_checkpoint_without_gpms_heads_is_refused(checkpoint, tmp_path, change, match):
    path = _rewrite(checkpoint, tmp_path / "broken", change)
    with pytest.raises(ValueError, match=match):
        GPMEngine(ModelConfig(engine="gpm", path=path))


def test_a_non_positive_tau_is_refused(checkpoint):
    with pytest.raises(ValueError, match="tau must be positive"):
        GPMEngine(ModelConfig(engine="gpm", path=checkpoint, engine_kwargs={"tau": 0}))
