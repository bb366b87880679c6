"""Tests for the backend helpers of moaa_ray.serve.backends and moaa_ray.serve.rendering that need no
Ray: batching plans, token counts, prompts under a real tiny tokenizer."""

from __future__ import annotations

import pytest

from moaa_ray.engines.base import Answer, SamplingParams
from moaa_ray.serve.backends import completion_of, group_requests
from moaa_ray.serve.protocol import GeneratedChoice, OpenAIError
from moaa_ray.serve.rendering import render_prompt

GREEDY_8 = SamplingParams(temperature=0.0, max_new_tokens=8)
GREEDY_64 = SamplingParams(temperature=0.0, max_new_tokens=64)
SAMPLED = SamplingParams(temperature=1.0, max_new_tokens=8, n=2)


def test_identical_sampling_shares_one_engine_call_in_arrival_order():
    assert group_requests([GREEDY_8, SAMPLED, GREEDY_8, SAMPLED, GREEDY_8]) == [
        (GREEDY_8, [0, 2, 4]),
        (SAMPLED, [1, 3]),
    ]


def test_shorter_calls_run_first():
    assert group_requests([GREEDY_64, GREEDY_8, GREEDY_64]) == [
        (GREEDY_8, [1]),
        (GREEDY_64, [0, 2]),
    ]


def test_each_seeded_request_runs_alone_so_its_seed_reproduces():
    seeded = SamplingParams(temperature=1.0, max_new_tokens=8, seed=7)
    assert group_requests([seeded, SAMPLED, seeded]) == [
        (seeded, [0]),
        (SAMPLED, [1]),
        (seeded, [2]),
    ]


def test_an_empty_batch_has_no_calls():
    assert group_requests([]) == []


def test_a_completion_keeps_the_engines_finish_reason_and_counts_no_more_than_the_limit():
    assert completion_of(Answer("a b"), 2, max_new_tokens=4) == GeneratedChoice("a b", 2, "stop")
    # Ended by the model exactly at the limit: no cut.
    assert completion_of(Answer("a b c d"), 4, max_new_tokens=4) == GeneratedChoice(
        "a b c d", 4, "stop"
    )
    # Re-encoding counted more tokens than were generated: capped.
    assert completion_of(Answer("abcdef", "length"), 6, max_new_tokens=4) == GeneratedChoice(
        "abcdef", 4, "length"
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dirs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dirs["llama-a"])


def test_the_prompt_is_the_chat_template_with_the_generation_prompt(tokenizer):
    conversation = [{"role": "user", "content": "Hi"}]
    ids = render_prompt(tokenizer, conversation, accepts_system=True)
    assert tokenizer.decode(ids) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_a_template_that_refuses_the_messages_is_a_400(tokenizer):
    strict = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    strict.chat_template = (
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('Conversation roles must start with user') }}{% endif %}"
    )
    with pytest.raises(OpenAIError, match="roles must start with user") as caught:
        render_prompt(
            strict,
            [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}],
            accepts_system=True,
        )
    assert (caught.value.status, caught.value.param) == (400, "messages")


def test_a_system_message_is_folded_for_a_template_that_refuses_it(tiny_model_dirs):
    from transformers import AutoTokenizer

    gemma = AutoTokenizer.from_pretrained(tiny_model_dirs["gemma-style"])
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    ids = render_prompt(gemma, conversation, accepts_system=False)
    assert gemma.decode(ids) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


def test_a_batch_makes_one_engine_call_per_group_and_a_failed_call_fails_only_its_requests():
    """The batch handler on the simulated engine (a test instrument that counts calls and raises on a
    marked prompt); Serve's queue in front of it is exercised in tests/ray/test_serve.py."""
    import asyncio

    from moaa_ray.config import ModelConfig, SimulatedConfig
    from moaa_ray.engines.simulated import SimulatedEngine
    from moaa_ray.serve.backends import BatchedBackend

    config = ModelConfig(
        path="sim", engine="simulated", simulated=SimulatedConfig(poison_marker="POISON")
    )
    engine = SimulatedEngine(config)
    backend = BatchedBackend(engine, tokenizer=None, context_length=None, max_batch_size=8)
    ok = [{"role": "user", "content": "hi"}]
    poisoned = [{"role": "user", "content": "POISON"}]
    batch = [(ok, GREEDY_8), (ok, SAMPLED), (poisoned, SAMPLED), (ok, GREEDY_8)]
    answers = asyncio.run(backend._run_batch(batch))
    assert engine.calls == 2  # GREEDY_8's two requests shared a call; SAMPLED's two another
    assert isinstance(answers[1], Exception) and isinstance(answers[2], Exception)
    assert [len(answers[i]) for i in (0, 3)] == [1, 1]
