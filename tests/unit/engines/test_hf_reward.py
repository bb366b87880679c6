"""HFRewardEngine on tiny random Llama reward models whose tokenizer has no pad token (as Llama-3's):
batches score each conversation as the model scores it alone, and the reward is read off the output
field ``reward_head`` names."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from moaa_ray.config import ModelConfig

torch = pytest.importorskip("torch")

from transformers import (  # noqa: E402  (after the torch check)
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
)
from transformers.utils import ModelOutput  # noqa: E402

from moaa_ray.engines.hf_reward import HFRewardEngine  # noqa: E402
from moaa_ray.tiny_models import build_tokenizer  # noqa: E402

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
    [
        {"role": "user", "content": "Tell me about the weather in Paris in spring."},
        {"role": "assistant", "content": "It is mild, with showers and long bright spells."},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, friend."}],
]


def build_reward_model(directory, chat_format: str) -> str:
    """A one-label Llama sequence classifier whose tokenizer and config have no pad token."""
    tokenizer = build_tokenizer(directory, chat_format)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=64,
        num_labels=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module", params=["chatml", "mistral"])
def reward_model(request, tmp_path_factory):
    """(directory, the token the engine pads with): ChatML ends a turn with ``<|im_end|>\\n``, so eos
    pads; Mistral's template ends a conversation with eos ``</s>`` (as Llama-3's with ``<|eot_id|>``),
    so bos pads."""
    pad = {"chatml": "<|im_end|>", "mistral": "<s>"}[request.param]
    return build_reward_model(tmp_path_factory.mktemp(request.param), request.param), pad


def alone(directory: str) -> list[float]:
    """Each conversation scored as the model card runs it: the published model (no pad token), one
    unpadded conversation at a time."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    assert tokenizer.pad_token is None and model.config.pad_token_id is None
    scores = []
    for conversation in CONVERSATIONS:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            scores.append(model(**inputs).logits[0, 0].item())
    return scores


def test_a_batch_scores_each_conversation_as_it_scores_alone(reward_model):
    directory, pad = reward_model
    engine = HFRewardEngine(ModelConfig(engine="hf_reward", path=directory))
    assert engine.tokenizer.pad_token == pad
    assert engine.model.config.pad_token_id == engine.tokenizer.pad_token_id
    lengths = {len(engine.tokenizer.apply_chat_template(c, tokenize=False)) for c in CONVERSATIONS}
    assert len(lengths) == len(CONVERSATIONS)  # the batch is padded
    scores = engine.score(CONVERSATIONS)
    assert scores == pytest.approx(alone(directory), abs=1e-5)
    assert len(set(scores)) == len(scores)


@dataclass
class RewardOutput(ModelOutput):
    """ArmoRM's output shape: the reward in ``score``, per-objective rewards in ``logits``."""

    score: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class ScoreOutputModel(torch.nn.Module):
    """A custom reward model: its reward is ``output.score`` (twice the wrapped head's logit)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **inputs):
        logits = self.model(**inputs).logits
        return RewardOutput(score=2 * logits, logits=torch.cat([logits, -logits], dim=-1))


def test_reward_head_score_reads_a_custom_models_output_score(reward_model):
    directory, _ = reward_model
    plain = HFRewardEngine(ModelConfig(engine="hf_reward", path=directory)).score(CONVERSATIONS)
    engine = HFRewardEngine(ModelConfig(engine="hf_reward", path=directory, reward_head="score"))
    engine.model = ScoreOutputModel(engine.model)
    assert engine.score(CONVERSATIONS) == pytest.approx([2 * s for s in plain], abs=1e-5)
    engine.reward_head = "logits"  # the custom model's logits hold two values per conversation
    with pytest.raises(ValueError, match="reward_head 'logits' holds 2 values per conversation"):
        engine.score(CONVERSATIONS)


def test_a_reward_head_the_output_lacks_is_named_with_the_model(reward_model):
    directory, _ = reward_model
    engine = HFRewardEngine(ModelConfig(engine="hf_reward", path=directory, reward_head="score"))
    missing = rf"{directory}: the model's output has no 'score'.*reward_head"
    with pytest.raises(ValueError, match=missing):
        engine.score(CONVERSATIONS[:1])
