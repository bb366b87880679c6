"""Tests for AlpacaEval 2's judge in moaa_ray.core.alpaca_eval_judge, against alpaca_eval 0.6.6 itself.

The oracle is the installed alpaca_eval run offline: its ``logprob_parser`` on synthetic top-5
completions, and its annotator ``weighted_alpaca_eval_gpt4_turbo`` (prompt, order switch, parsing,
mapping back) with its call to OpenAI replaced by a fake judge that also answers our prompts.
"""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from moaa_ray.core.alpaca_eval_judge import (
    CHOICES,
    IDENTICAL_OUTPUTS,
    MAX_TOKENS,
    TEMPERATURE,
    TOP_LOGPROBS,
    model_score,
    outputs_switched,
    preference_from_logprobs,
    preference_from_text,
    render_alpaca_eval_judge_prompt,
    unswitched,
)

ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"

# Top-5 lists of the judge's first token: both choices, one missing, neither, a tie, extremes.
TOP_LISTS = [
    [("M", -0.0176), ("m", -4.0488), ("Both", -14.9), ("The", -15.7), ("Based", -15.96)],
    [("m", -0.3), ("M", -1.4), ("**", -3.0)],
    [("m", -0.01), ("Model", -5.0), ("The", -6.0)],  # no "M": P(m) = 1
    [("M", -2.5), ("Output", -0.2)],  # no "m": P(m) = 0
    [("Both", -0.1), ("The", -2.0), (" m", -3.0), ("M ", -4.0)],  # neither (exact tokens only)
    [("m", -0.6931), ("M", -0.6931)],
    [("m", -1e-9), ("M", -40.0)],
    [("M", 0.0), ("m", -math.inf)],
]


def _completion(top: list[tuple[str, float]]) -> dict:
    """A completion as alpaca_eval's openai decoder keeps it (``completions_all``)."""
    tops = [{"token": token, "logprob": logprob} for token, logprob in top]
    token = tops[0]["token"]
    return {"logprobs": {"content": [{"token": token, "top_logprobs": tops}]}, "text": token}


def _alpaca_annotator():
    pytest.importorskip("alpaca_eval")
    from alpaca_eval.annotators import PairwiseAnnotator

    return PairwiseAnnotator(annotators_config=ANNOTATOR, caching_path=None)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_request_is_alpaca_evals():
    single = _alpaca_annotator().annotators[ANNOTATOR]
    kwargs = single.completions_kwargs
    assert kwargs["model_name"] == "gpt-4-1106-preview" and kwargs["logprobs"] is True
    assert (kwargs["max_tokens"], kwargs["temperature"]) == (MAX_TOKENS, TEMPERATURE)
    assert kwargs["top_logprobs"] == TOP_LOGPROBS


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("top", TOP_LISTS)
def test_preferences_match_alpaca_evals_logprob_parser(top):
    parsers = pytest.importorskip("alpaca_eval.completion_parsers")
    [expected] = parsers.logprob_parser(
        _completion(top), numerator_token="m", denominator_tokens=list(CHOICES), is_binarize=False
    )
    ours = preference_from_logprobs(dict(top))
    if math.isnan(expected):
        assert ours is None
    else:
        assert ours == pytest.approx(expected, abs=1e-12)


def test_the_text_fallback_reads_only_m_or_m():
    assert preference_from_text("m") == 1.0 and preference_from_text(" M\n") == 2.0
    assert preference_from_text("Model m") is None and preference_from_text("") is None


def _fake_judge(user: str) -> list[tuple[str, float]]:
    """A judge's top tokens from the prompt: the shorter output wins, a marker drops a token."""
    first, second = re.findall(r'"output": """(.*?)"""', user, re.DOTALL)
    top = [("m", -len(first) / 7), ("M", -len(second) / 7), ("I", -9.0)]
    return [(t, lp) for t, lp in top if f"no-{t}" not in first + second]


INSTRUCTIONS = [
    "Name a color.",
    'Write "hello" in {braces} and """triple quotes""".',
    "Explain recursion.\n\nUse two lines.",
    "Übersetze: good morning",
    "List {output_1} placeholders literally.",
    *(f"Question {i}?" for i in range(15)),
]


def _outputs(seed: int = 0) -> list[tuple[str, str, str]]:
    """(instruction, baseline output, model output), with an identical pair and markers."""
    rng = random.Random(seed)
    rows = []
    for i, instruction in enumerate(INSTRUCTIONS):
        baseline = "b" * rng.randrange(1, 60) + ("\nno-M" if i == 3 else "")
        model = "a" * rng.randrange(1, 60) + (" no-m no-M" if i == 5 else "")
        rows.append((instruction, baseline, baseline if i == 7 else model))
    return rows


def _none_if_nan(preference: float | None) -> float | None:
    """alpaca_eval's missing preference (NaN or None) as ours (None)."""
    return None if preference is None or math.isnan(preference) else preference


def _canonical(messages: list[dict]) -> str:
    return json.dumps(messages, sort_keys=True)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_prompts_and_preferences_are_alpaca_evals_own(monkeypatch):
    from alpaca_eval import utils

    annotator = _alpaca_annotator()
    single = annotator.annotators[ANNOTATOR]
    seen = []

    def completions(prompts, **kwargs):
        messages = [utils.prompt_to_chatml(p) for p in prompts]
        seen.extend(messages)
        return {"completions_all": [_completion(_fake_judge(m[1]["content"])) for m in messages]}

    monkeypatch.setattr(single, "fn_completions", completions)
    rows = _outputs()
    annotated = annotator.annotate_head2head(
        outputs_1=[{"instruction": i, "output": b} for i, b, _ in rows],
        outputs_2=[{"instruction": i, "output": m} for i, _, m in rows],
    )
    expected = {a["instruction"]: _none_if_nan(a["preference"]) for a in annotated}

    ours, prompts = {}, []
    for instruction, baseline, model in rows:
        switched = outputs_switched(instruction)
        if baseline == model:
            ours[instruction] = IDENTICAL_OUTPUTS
            continue
        shown = (model, baseline) if switched else (baseline, model)
        messages = render_alpaca_eval_judge_prompt(instruction, *shown)
        prompts.append(messages)
        preference = preference_from_logprobs(dict(_fake_judge(messages[1]["content"])))
        ours[instruction] = unswitched(preference, switched)

    assert sorted(map(_canonical, prompts)) == sorted(map(_canonical, seen))
    assert 0 < sum(map(outputs_switched, INSTRUCTIONS)) < len(INSTRUCTIONS)  # both orders occur
    assert ours.keys() == expected.keys() and ours[INSTRUCTIONS[5]] is None
    assert [k for k, v in ours.items() if v is None] == [
        k for k, v in expected.items() if v is None
    ]
    decided = {k: v for k, v in expected.items() if v is not None}
    assert {k: ours[k] for k in decided} == pytest.approx(decided, abs=1e-12)


def test_a_model_always_preferred_has_score_one_and_the_baseline_zero():
    assert model_score([unswitched(2.0, False), unswitched(1.0, True)]) == 1.0
    assert model_score([unswitched(1.0, False), unswitched(2.0, True)]) == 0.0
    assert model_score([1.25, None, 1.75]) == pytest.approx(0.5)
    assert model_score([None]) is None and model_score([]) is None
