"""The function engine: a Python function named in the config answers and scores (no Ray)."""

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.core.criteria import Criterion
from moaa_ray.core.judging import parse_verdict, render_aggregator_prompt, render_judge_prompt
from moaa_ray.core.moa import with_references
from moaa_ray.engines.base import Answer, SamplingParams
from moaa_ray.engines.factory import build_engine
from moaa_ray.engines.function import FunctionEngine

QUESTION = [{"role": "user", "content": "What is 31 + 37?"}]
CRITERIA = [Criterion("accuracy", "The answer is correct.")]
ROLES = "moaa_ray.tasks.addition"


def engine(function: str, **kwargs) -> FunctionEngine:
    config = ModelConfig(path=f"{ROLES}:{function}", engine="function", engine_kwargs=kwargs)
    built = build_engine(config)
    assert isinstance(built, FunctionEngine)
    return built


def echo(messages, *, rng, suffix=""):
    """A test function: the last message with a random number and an optional suffix."""
    return f"{messages[-1]['content']} {rng.random()}{suffix}"


def number(messages, *, rng):
    return 3


def vandal(messages, *, rng):
    messages[-1]["content"] = "changed"
    return "ok"


def test_each_role_function_answers_through_the_engine():
    params = SamplingParams(temperature=0.0)
    judge = render_judge_prompt(QUESTION, "68", "67", CRITERIA)
    [[verdict]] = engine("verifier_judge", flip_rate=0.0).chat([judge], params)
    assert parse_verdict(verdict.text) == "A" and verdict.finish_reason == "stop"
    evaluations = ["Verdict: B", "Verdict: B", "Verdict: A"]
    aggregate = render_aggregator_prompt(QUESTION, "67", "68", CRITERIA, evaluations)
    [[final]] = engine("majority_judge").chat([aggregate], params)
    assert parse_verdict(final.text) == "B"
    references = with_references(QUESTION, ["68", "67", "68"], "aggregate.txt")
    assert engine("plurality_aggregator").chat([references], params) == [[Answer("68")]]
    answered = [*QUESTION, {"role": "assistant", "content": "68"}]
    wrong = [*QUESTION, {"role": "assistant", "content": "67"}]
    assert engine("verifier_reward").score([answered, wrong]) == [1.0, 0.0]


def test_answers_are_deterministic_per_seed_and_vary_with_sample_and_conversation():
    noisy = engine("verifier_judge", flip_rate=0.5)
    prompts = [render_judge_prompt(QUESTION, "68", str(n), CRITERIA) for n in range(60, 68)]
    params = SamplingParams(n=4, seed=1)
    first = noisy.chat(prompts, params)
    assert first == engine("verifier_judge", flip_rate=0.5).chat(prompts, params)
    assert len(first) == 8 and all(len(answers) == 4 for answers in first)
    assert first != noisy.chat(prompts, SamplingParams(n=4, seed=2))
    assert any(
        len({a.text for a in answers}) > 1 for answers in first
    )  # a prompt's samples flip differently


def test_keyword_arguments_and_a_seeded_rng_reach_the_function():
    config = ModelConfig(path=f"{__name__}:echo", engine="function", engine_kwargs={"suffix": "!"})
    answers = [
        a.text for a in FunctionEngine(config).chat([QUESTION], SamplingParams(n=3, seed=0))[0]
    ]
    assert all(a.startswith("What is 31 + 37? 0.") and a.endswith("!") for a in answers)
    assert len(set(answers)) == 3


def test_the_function_does_not_edit_the_callers_messages():
    fn = FunctionEngine(ModelConfig(path=f"{__name__}:vandal", engine="function"))
    conversation = [dict(QUESTION[0])]
    assert fn.chat([conversation], SamplingParams()) == [[Answer("ok")]]
    assert conversation == QUESTION


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("moaa_ray.no_such_module:f", "cannot import 'moaa_ray.no_such_module'"),
        (f"{ROLES}:no_such_function", "has no callable 'no_such_function'"),
        (f"{ROLES}:MAX_OPERAND", "has no callable 'MAX_OPERAND'"),
    ],
)
def test_a_function_that_cannot_be_loaded_fails_at_construction(spec, match):
    with pytest.raises(ValueError, match=match):
        FunctionEngine(ModelConfig(path=spec, engine="function"))


def test_a_chat_function_must_return_text_and_a_score_function_a_number():
    numeric = FunctionEngine(ModelConfig(path=f"{__name__}:number", engine="function"))
    with pytest.raises(TypeError, match=rf"{__name__}:number returned int"):
        numeric.chat([QUESTION], SamplingParams())
    assert numeric.score([QUESTION]) == [3.0]
    with pytest.raises(TypeError, match=r"verifier_judge returned str; a score must be a number"):
        engine("verifier_judge").score([render_judge_prompt(QUESTION, "1", "2", CRITERIA)])


def test_a_function_has_no_logprobs():
    with pytest.raises(NotImplementedError, match="set verdict_mode: text"):
        engine("verifier_judge").choice_logprobs([QUESTION], "Verdict: ", ["A", "B"])
