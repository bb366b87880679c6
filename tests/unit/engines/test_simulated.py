"""The simulated engine: deterministic answers, sleeping latency and injected faults (no Ray)."""

import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from moaa_ray.config import ModelConfig, SimulatedConfig
from moaa_ray.core.arena_hard import parse_arena_hard_verdict, render_arena_hard_judge_prompt
from moaa_ray.core.judging import parse_verdict
from moaa_ray.core.mt_bench import parse_rating
from moaa_ray.engines.base import SamplingParams
from moaa_ray.engines.factory import build_engine
from moaa_ray.engines.simulated import SimulatedEngine

REPO = Path(__file__).resolve().parents[3]
HELLO = [{"role": "user", "content": "hello"}]
BYE = [{"role": "user", "content": "bye"}]


def engine(path: str = "sim-a", **settings) -> SimulatedEngine:
    config = ModelConfig(path=path, engine="simulated", simulated=SimulatedConfig(**settings))
    return SimulatedEngine(config)


def test_build_engine_picks_the_simulated_backend():
    config = ModelConfig(path="sim-a", engine="simulated")
    assert isinstance(build_engine(config), SimulatedEngine)


def test_importing_the_engine_loads_nothing_heavy():
    code = (
        "import sys, moaa_ray.engines.simulated; "
        "print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_answers_are_deterministic_and_vary_with_their_inputs():
    params = SamplingParams(max_new_tokens=20, n=3, seed=1)
    first = engine().chat([HELLO, BYE], params)
    assert first == engine().chat([HELLO, BYE], params)
    assert len(first) == 2 and all(len(answers) == 3 for answers in first)
    assert len(set(first[0])) == 3  # the n answers differ from each other
    assert first[0] != first[1]  # another conversation
    assert engine().chat([HELLO], SamplingParams(max_new_tokens=20, n=3, seed=2))[0] != first[0]
    assert engine(seed=7).chat([HELLO], params)[0] != first[0]
    assert engine(path="sim-b").chat([HELLO], params)[0] != first[0]


def test_word_count_is_exact_and_a_small_budget_cuts_the_tail():
    assert len(engine().chat([HELLO], SamplingParams(max_new_tokens=9))[0][0].text.split()) == 9
    filled = engine().chat([HELLO], SamplingParams(max_new_tokens=9))[0][0]
    assert filled.finish_reason == "stop"  # fills the budget exactly and ends with its verdict
    long = engine(answer_tokens=50).chat([HELLO], SamplingParams(max_new_tokens=9, n=2))[0]
    assert [len(a.text.split()) for a in long] == [9, 9] and all(a.truncated for a in long)
    assert parse_verdict(long[0].text) is None  # the cut took the verdict at the end
    whole = engine(answer_tokens=50).chat([HELLO], SamplingParams(max_new_tokens=50))[0][0]
    assert whole.text.startswith(long[0].text) and not whole.truncated
    two = engine(answer_tokens=2).chat([HELLO], SamplingParams())[0][0].text
    assert two.split()[0] == "Verdict:" and parse_verdict(two) is not None
    assert engine(answer_tokens=1).chat([HELLO], SamplingParams())[0][0].text == "Verdict:"


def test_answers_carry_a_verdict_and_a_grade_that_parse():
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(40)]
    answers = [a[0].text for a in engine().chat(conversations, SamplingParams(max_new_tokens=12))]
    verdicts = [parse_verdict(a) for a in answers]
    grades = [parse_rating(a) for a in answers]
    assert set(verdicts) == {"A", "B", "tie"}
    assert all(isinstance(g, float) and 1.0 <= g <= 10.0 and g.is_integer() for g in grades)
    assert len(set(grades)) > 3
    assert answers[0].split()[-4:] == [
        "Verdict:",
        f"[[{verdicts[0]}]]",
        "Rating:",
        f"[[{grades[0]:.0f}]]",
    ]


def test_an_arena_hard_judge_prompt_gets_one_of_its_five_labels():
    prompts = [render_arena_hard_judge_prompt(f"q{i}", "answer a", "answer b") for i in range(40)]
    answers = [a[0].text for a in engine().chat(prompts, SamplingParams(max_new_tokens=12))]
    verdicts = {parse_arena_hard_verdict(a) for a in answers}
    assert verdicts == {"A>>B", "A>B", "A=B", "B>A", "B>>A"}


def test_choice_logprobs_are_negative_normalised_and_deterministic():
    choices = ["A", "B", "tie"]
    logprobs = engine().choice_logprobs([HELLO, BYE], "Verdict: ", choices)
    assert logprobs == engine().choice_logprobs([HELLO, BYE], "Verdict: ", choices)
    assert logprobs[0] != logprobs[1]
    for row in logprobs:
        assert len(row) == 3
        assert all(math.isfinite(x) and x < 0 for x in row)
        assert sum(math.exp(x) for x in row) <= 1.0
    assert engine().choice_logprobs([HELLO], "Other: ", choices)[0] != logprobs[0]


def test_scores_are_deterministic_and_in_range():
    conversations = [[{"role": "user", "content": f"q{i}"}] for i in range(50)]
    scores = engine().score(conversations)
    assert scores == engine().score(conversations)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) == 50


def test_latency_sleeps_without_using_cpu():
    sim = engine(latency_s=0.3, latency_per_token_s=0.01)
    for call, expected in [
        (lambda: sim.chat([HELLO] * 8, SamplingParams(max_new_tokens=10, n=4)), 0.4),
        (lambda: sim.score([HELLO]), 0.3),
        (lambda: sim.choice_logprobs([HELLO], "", ["A", "B"]), 0.3),
    ]:
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        assert time.perf_counter() - wall >= expected
        assert time.process_time() - cpu < 0.05


def test_fail_first_n_fails_the_first_calls_of_any_method():
    sim = engine(fail_first_n=2)
    with pytest.raises(RuntimeError, match="call 1 of the first 2"):
        sim.chat([HELLO], SamplingParams())
    with pytest.raises(RuntimeError, match="call 2 of the first 2"):
        sim.score([HELLO])
    assert len(sim.chat([HELLO], SamplingParams())[0]) == 1
    assert sim.calls == 3


def test_poison_fails_only_batches_that_contain_it():
    sim = engine(poison_marker="POISON")
    bad = [{"role": "user", "content": "a POISON pill"}]
    with pytest.raises(ValueError, match="poisoned prompt: contains 'POISON'"):
        sim.chat([HELLO, bad], SamplingParams())
    with pytest.raises(ValueError, match="poisoned prompt"):
        sim.score([bad])
    assert len(sim.chat([HELLO, BYE], SamplingParams())) == 2


def test_failure_rate_is_all_or_nothing_at_its_extremes_and_repeatable():
    always = engine(failure_rate=1.0)
    for _ in range(5):
        with pytest.raises(RuntimeError, match="simulated failure"):
            always.score([HELLO])
    never = engine(failure_rate=0.0)
    assert all(len(never.score([HELLO])) == 1 for _ in range(20))

    def outcomes() -> list[bool]:
        sim, result = engine(failure_rate=0.5, seed=3), []
        for _ in range(30):
            try:
                sim.score([HELLO])
                result.append(True)
            except RuntimeError:
                result.append(False)
        return result

    first = outcomes()
    assert first == outcomes() and 0 < sum(first) < 30


def test_hang_blocks_only_calls_with_the_marker():
    sim = engine(hang_marker="HANG")
    hung = threading.Thread(
        target=sim.chat,
        args=([[{"role": "user", "content": "please HANG"}]], SamplingParams()),
        daemon=True,
    )
    hung.start()
    hung.join(0.5)
    assert hung.is_alive()
    assert len(sim.chat([HELLO], SamplingParams())[0]) == 1


def test_crash_exits_the_process_on_the_given_call():
    code = """
from moaa_ray.config import ModelConfig, SimulatedConfig
from moaa_ray.engines.base import SamplingParams
from moaa_ray.engines.factory import build_engine
sim = build_engine(ModelConfig(path="sim-a", engine="simulated",
                               simulated=SimulatedConfig(crash_after_calls=2)))
params = SamplingParams(max_new_tokens=5)
print("first:", sim.chat([[{"role": "user", "content": "hi"}]], params)[0][0], flush=True)
print("second:", sim.chat([[{"role": "user", "content": "hi"}]], params)[0][0], flush=True)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1
    assert out.stdout.startswith("first: ") and "Verdict:" in out.stdout
    assert "second:" not in out.stdout
    assert "Ray instance" not in out.stderr  # the restart check must not start a local Ray


def test_a_restarted_replica_does_not_crash_again(monkeypatch):
    monkeypatch.setattr("moaa_ray.engines.simulated._was_restarted", lambda: True)
    assert len(engine(crash_after_calls=1).chat([HELLO], SamplingParams())[0]) == 1


def test_load_s_is_spent_loading_as_a_large_model_would(monkeypatch):
    from moaa_ray.engines import simulated

    slept: list[float] = []
    monkeypatch.setattr(simulated.time, "sleep", slept.append)
    build_engine(ModelConfig(path="m", engine="simulated", simulated=SimulatedConfig(load_s=7.5)))
    assert slept == [7.5]
