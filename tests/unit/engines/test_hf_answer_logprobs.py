"""HFEngine.answer_logprobs on a tiny model: the answer's mean token log-probability, batched right."""

from __future__ import annotations

import pytest

from moaa_ray.engines.base import SamplingParams

torch = pytest.importorskip("torch")

SHORT = [{"role": "user", "content": "Say hi"}]
LONG = [{"role": "user", "content": "Compare the two answers on accuracy and clarity. " * 6}]


def answered(question: list[dict[str, str]], answer: str) -> list[dict[str, str]]:
    return [*question, {"role": "assistant", "content": answer}]


def test_the_score_is_the_mean_log_probability_of_the_answer_tokens(tiny_engine):
    tokenizer = tiny_engine.tokenizer
    head = tokenizer.apply_chat_template(SHORT, tokenize=False, add_generation_prompt=True)
    head_ids = tokenizer.encode(head, add_special_tokens=False)
    ids = tokenizer.encode(head + "hello there", add_special_tokens=False)
    with torch.inference_mode():
        logits = tiny_engine.model(input_ids=torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    expected = [logprobs[k - 1, ids[k]].item() for k in range(len(head_ids), len(ids))]
    [score] = tiny_engine.answer_logprobs([answered(SHORT, "hello there")])
    assert score == pytest.approx(sum(expected) / len(expected), abs=1e-4)


def test_a_batch_of_different_lengths_scores_each_as_alone(tiny_engine):
    batch = [answered(SHORT, "hello there, friend"), answered(LONG, "A")]
    alone = [tiny_engine.answer_logprobs([c])[0] for c in batch]
    assert tiny_engine.answer_logprobs(batch) == pytest.approx(alone, abs=1e-4)


def test_the_models_greedy_answer_is_more_likely_than_another(tiny_engine):
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    greedy = tiny_engine.chat([SHORT], params)[0][0].text
    other = "".join(reversed(greedy)) + " zq"
    mine, theirs = tiny_engine.answer_logprobs([answered(SHORT, greedy), answered(SHORT, other)])
    assert mine > theirs


def test_an_empty_answer_scores_minus_infinity(tiny_engine):
    assert tiny_engine.answer_logprobs([answered(SHORT, "")]) == [float("-inf")]
