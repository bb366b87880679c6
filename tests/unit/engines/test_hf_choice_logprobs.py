"""HFEngine.choice_logprobs on a tiny model: the verdict tokens the tokenizer writes, batched right."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

SHORT = [{"role": "user", "content": "Which is better, A or B?"}]
LONG = [{"role": "user", "content": "Compare the two answers on accuracy and clarity. " * 6}]


def next_token_logprobs(tiny_engine, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        logits = tiny_engine.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return torch.log_softmax(logits, dim=-1)


def test_verdicts_are_the_probabilities_of_the_tokens_the_tokenizer_writes(tiny_engine):
    tokenizer = tiny_engine.tokenizer
    text = tokenizer.apply_chat_template(SHORT, tokenize=False, add_generation_prompt=True)
    prompt = tokenizer.encode(text + "Verdict: ", add_special_tokens=False)
    assert tokenizer.convert_ids_to_tokens(prompt[-2:]) == [":", "Ġ"]
    # "Verdict: A" ends in "ĠA"; the tiny vocabulary has no "ĠZ", so "Verdict: Z" ends in "Ġ", "Z".
    space_a, space, z = tokenizer.convert_tokens_to_ids(["ĠA", "Ġ", "Z"])
    after_colon = next_token_logprobs(tiny_engine, prompt[:-1])
    after_space = next_token_logprobs(tiny_engine, prompt)
    expected = [
        after_colon[space_a].item(),
        after_colon[space].item() + after_space[z].item(),
    ]
    [scores] = tiny_engine.choice_logprobs([SHORT], "Verdict: ", ["A", "Z"])
    assert scores == pytest.approx(expected, abs=1e-4)


def test_a_batch_of_prompts_of_different_lengths_scores_each_as_alone(tiny_engine):
    batched = tiny_engine.choice_logprobs([SHORT, LONG], "Verdict: ", ["A", "B"])
    alone = [tiny_engine.choice_logprobs([c], "Verdict: ", ["A", "B"])[0] for c in (SHORT, LONG)]
    for batch_row, alone_row in zip(batched, alone, strict=True):
        assert batch_row == pytest.approx(alone_row, abs=1e-4)
