"""Evaluation without a cluster: result assembly, grade expectations, the answer and grade steps."""

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError
from scipy import stats

from moaa_ray.config import (
    BenchmarkConfig,
    EvaluateConfig,
    GradingSamplingConfig,
    JudgingConfig,
    MoaaConfig,
    SamplingConfig,
    load_config,
)
from moaa_ray.core.benchmarks import BenchmarkQuestion
from moaa_ray.core.verification import wilson_interval
from moaa_ray.core.winrates import LC_FALLBACK_LABEL
from moaa_ray.engines.base import SamplingParams
from moaa_ray.pipeline.evaluate import stage as evaluate_module
from moaa_ray.pipeline.evaluate.questions import (
    baseline_name,
    new_question_state,
    question_row_id,
    question_states,
    transcript,
)
from moaa_ray.pipeline.evaluate.results import (
    arena_battles,
    benchmark_results,
    is_scored,
    verified_results,
)
from moaa_ray.pipeline.evaluate.rows import verify_answers
from moaa_ray.pipeline.evaluate.sources import (
    ACCURACY,
    MT_BENCH_GRADES,
    OWN_BT,
    OWN_PAIRWISE_MT_BENCH,
    WIN_RATE,
)
from moaa_ray.pipeline.evaluate.stage import EvaluationStage, shared_judges
from moaa_ray.pipeline.evaluate.steps import AnswerStep, ArenaHardJudgeStep, GradeStep, JudgedOnly
from moaa_ray.stages.rundir import RunDir
from moaa_ray.tasks.addition import verify
from tests.support.fakes import FakePool

ROOT = Path(__file__).parents[3]

STATS = json.dumps({"judgments": 6, "abstains": 0, "position_flips": 0, "pairs": 1})


def row(score, model_answer="model answer", baseline_answer="baseline", grades=()):
    return {
        "score": score,
        "model_answers": [model_answer],
        "baseline_answers": [baseline_answer],
        "grades": list(grades),
        "stats": STATS,
    }


def test_results_count_every_question_and_rank_a_winning_model_above_the_anchor():
    rows = [row(1.0), row(1.0), row(0.8), row(0.5), row(0.0), row(None)]
    result = benchmark_results(rows, "policy", "base", num_skipped=2, bootstrap_rounds=50)
    assert result["wins"] + result["ties"] + result["losses"] + result["abstained"] == 6
    assert (result["wins"], result["ties"], result["losses"], result["abstained"]) == (3, 1, 1, 1)
    assert result["judged"] == 6 and result["skipped_no_baseline"] == 2
    assert result["win_rate"] == pytest.approx(100 * 3.3 / 5)
    # Five comparisons: the cross-validated L1 penalty zeroes the fit, as alpaca_eval's does.
    assert result["lc_win_rate"] == pytest.approx(50.0)
    bt = result["bt"]
    assert 50 < bt["score"] and bt["lower"] <= bt["score"] <= bt["upper"]
    assert result["mt_bench"] is None
    assert result["abstain_rate"] == 0.0 and result["baseline"] == "base"


def test_results_when_every_judge_abstained_are_none_not_nan_and_json_safe():
    result = benchmark_results([row(None), row(None)], "policy", "base", 0, bootstrap_rounds=10)
    assert result["abstained"] == 2
    assert result["win_rate"] is None and result["lc_win_rate"] is None and result["bt"] is None
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_length_control_discounts_wins_bought_with_longer_answers():
    # The model wins exactly when its answer is the longer one.
    rows = [row(1.0, "x" * 400) for _ in range(5)] + [row(0.0, "x") for _ in range(5)]
    result = benchmark_results(rows, "policy", "base", 0, bootstrap_rounds=10)
    assert result["win_rate"] == pytest.approx(50.0)
    rows = [row(1.0, "x" * 400) for _ in range(8)] + [row(0.0, "x") for _ in range(2)]
    biased = benchmark_results(rows, "policy", "base", 0, bootstrap_rounds=10)
    assert biased["lc_win_rate"] < biased["win_rate"] == pytest.approx(80.0)


def test_mt_bench_grades_are_summarised_per_turn_with_missing_grades_counted():
    grades = [{"turn": 1, "score": 8.0}, {"turn": 2, "score": 6.0}, {"turn": 2, "score": None}]
    result = benchmark_results([row(0.5, grades=grades)], "policy", "base", 0, 10)
    assert result["mt_bench"]["per_turn"] == {"1": 8.0, "2": 6.0}
    assert result["mt_bench"]["overall"] == 7.0 and result["mt_bench"]["num_missing"] == 1
    assert result["sources"]["win_rate"] == OWN_PAIRWISE_MT_BENCH  # the win rate is not FastChat's
    assert result["sources"]["mt_bench"] == MT_BENCH_GRADES
    plain = benchmark_results([row(0.5)], "policy", "base", 0, 10)["sources"]
    assert plain == {
        "win_rate": WIN_RATE["ensemble"],
        "lc_win_rate": LC_FALLBACK_LABEL,
        "bt": OWN_BT,
    }


def test_row_ids_are_stable_and_differ_by_benchmark():
    assert question_row_id("mt_bench", "81") == question_row_id("mt_bench", "81")
    assert question_row_id("mt_bench", "81") != question_row_id("arena_hard", "81")


def test_evaluate_config_resolves_and_checks_baselines():
    judging = {"judges": ["j"]}
    mt = BenchmarkConfig(path="q/mt_bench.jsonl")
    alpaca = BenchmarkConfig(path="alpaca.json", baseline="answers")
    mt_on_model = BenchmarkConfig(path="q/mt_bench.jsonl", baseline="model")
    graded = BenchmarkConfig(path="q/mt_bench.jsonl", name="graded", baseline="none")
    ev = EvaluateConfig(
        benchmarks=[mt, alpaca, graded], model="m", baseline_model="b", judging=judging
    )
    assert ev.baseline_of(mt) == "model" and ev.baseline_of(alpaca) == "answers"
    assert baseline_name(ev, mt) == "b" and baseline_name(ev, alpaca) == "alpaca-answers"
    assert ev.baseline_of(graded) == "none" and baseline_name(ev, graded) is None
    assert EvaluateConfig(benchmarks=[mt], model="m", judging=judging).baseline_of(mt) == "answers"
    with pytest.raises(ValidationError, match="baseline 'model' but no baseline_model"):
        EvaluateConfig(benchmarks=[mt_on_model], model="m", judging=judging)
    with pytest.raises(ValidationError, match="names must be unique"):
        EvaluateConfig(benchmarks=[mt, mt], model="m", baseline_model="b", judging=judging)


def test_each_benchmark_gives_its_questions_one_kind(tmp_path):
    mt, arena, prompts = (tmp_path / f"{name}.jsonl" for name in ("mt", "arena", "prompts"))
    mt.write_text(json.dumps({"question_id": 1, "category": "writing", "turns": ["Hi?"]}))
    arena.write_text(json.dumps({"uid": "u1", "prompt": "Hi?"}))
    prompts.write_text(json.dumps({"prompt": "What is 1 + 1?"}))
    benchmarks = {
        "mt": ({"path": str(mt)}, "ensemble_graded"),
        "mt_arena": ({"path": str(mt), "judge": "arena_hard"}, "arena_hard_graded"),
        "mt_alpaca": ({"path": str(mt), "judge": "alpaca_eval"}, "alpaca_eval_graded"),
        "mt_alone": ({"path": str(mt), "baseline": "none"}, "graded"),
        "arena": ({"path": str(arena)}, "arena_hard"),
        "arena_ensemble": ({"path": str(arena), "judge": "ensemble"}, "ensemble"),
        "add": ({"path": str(prompts), "format": "verified"}, "verified"),
    }
    ev = EvaluateConfig.model_validate(
        {
            "benchmarks": [{"name": name, **bench} for name, (bench, _) in benchmarks.items()],
            "model": "m",
            "baseline_model": "b",
            "judging": {"judges": ["j"]},
        }
    )
    states, _ = question_states(ev)
    assert {s["benchmark"]: s["kind"] for s in states} == {
        name: kind for name, (_, kind) in benchmarks.items()
    }


def two_turn_state(baseline=None, row_id="q"):
    question = BenchmarkQuestion("1", ["first question", "second question"])
    return new_question_state(row_id, question, "bench", baseline, "ensemble_graded")


def test_answer_steps_carry_each_sides_own_history_and_pair_the_last_answers():
    model = FakePool(lambda method, conversation, params: [f"model says {len(conversation)}"])
    base = FakePool(lambda method, conversation, params: [f"base says {len(conversation)}"])
    from_model, from_file = two_turn_state(), two_turn_state(["file 1", "file 2"], "r")
    pools = {"model_answers": model, "baseline_answers": base}
    sampling = EvaluateConfig.model_fields["sampling"].default
    for turn in (0, 1):
        AnswerStep(pools, turn, sampling)([from_model, from_file])
    assert model.calls[1][1][0] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "model says 1"},
        {"role": "user", "content": "second question"},
    ]
    # The judges compare whole conversations, each side with its own earlier answers.
    assert from_model["samples"] == [
        "### User:\nfirst question\n\n### Assistant:\nmodel says 1\n\n"
        "### User:\nsecond question\n\n### Assistant:\nmodel says 3",
        transcript(["first question", "second question"], ["base says 1", "base says 3"]),
    ]
    assert from_file["samples"][1] == transcript(from_file["turns"], ["file 1", "file 2"])
    assert all(len(items) == 1 for _, items in base.calls)  # the file's answers are not redone
    assert from_model["prompt"] == [
        {"role": "user", "content": "first question"},
        {"role": "user", "content": "second question"},
    ]


@pytest.mark.parametrize("mode", ["text", "logprob"])
def test_grade_step_grades_every_turn_of_the_model(mode):
    def reply(method, conversation, *args):
        if method == "chat":
            return ["Fine answer. Rating: [[7]]"]
        return [0.0 if choice == "7" else -math.inf for choice in args[1]]

    state = two_turn_state(["b1", "b2"])
    state["model_answers"] = ["m1", "m2"]
    grader = FakePool(reply)
    sampling = EvaluateConfig.model_fields["sampling"].default
    GradeStep(grader, mode, sampling)([state, two_turn_state() | {"kind": "ensemble"}])
    assert [(g["turn"], g["score"]) for g in state["grades"]] == [(1, 7.0), (2, 7.0)]
    request = grader.calls[0][1][1][-1]["content"]  # turn 2: the whole conversation
    assert "first question" in request and "m1" in request and "m2" in request
    assert [g["category"] for g in state["grades"]] == [None, None]


def test_answers_are_sampled_at_each_questions_own_temperature():
    model = FakePool(lambda method, conversation, params: [f"at {params.temperature}"])
    writing = new_question_state(
        "w", BenchmarkQuestion("1", ["poem"]), "b", ["x"], "ensemble_graded", 0.7
    )
    math_q = new_question_state(
        "m", BenchmarkQuestion("2", ["2+2"]), "b", ["x"], "ensemble_graded", 0.0
    )
    default = new_question_state("d", BenchmarkQuestion("3", ["hi"]), "b", ["x"], "ensemble")
    sampling = EvaluateConfig.model_fields["sampling"].default.model_copy(
        update={"temperature": 0.3}
    )
    AnswerStep({"model_answers": model}, 0, sampling)([writing, math_q, default])
    assert [s["model_answers"] for s in (writing, math_q, default)] == [
        ["at 0.7"],
        ["at 0.0"],
        ["at 0.3"],
    ]
    assert len(model.calls) == 3  # one call per temperature


def test_judges_that_labelled_the_training_pairs_are_named_as_self_judging():
    config = load_config(ROOT / "configs" / "demo.yaml")
    assert shared_judges(config) == ["llama-c", "qwen2-b", "qwen2-d"]
    ev = config.evaluate
    assert ev is not None
    independent = ev.model_copy(
        update={
            "judging": ev.judging.model_copy(
                update={"judges": ["llama-a"], "aggregator_judge": None}
            )
        }
    )
    assert shared_judges(config.model_copy(update={"evaluate": independent})) == []
    assert shared_judges(config.model_copy(update={"preferences": None})) == []


def arena_state():
    """An Arena-Hard question whose model and baseline answers are in."""
    question = BenchmarkQuestion("u1", ["Write a haiku."])
    state = new_question_state("r", question, "arena", ["baseline haiku"], "arena_hard")
    state["model_answers"] = ["model haiku"]
    AnswerStep({}, 0, EvaluateConfig.model_fields["sampling"].default)([state])
    return state


def test_arena_hard_questions_are_judged_in_two_games_per_judge_with_its_prompt():
    labels = iter(
        ["Mine first... [[B>>A]]", "[[A>B]]", "no label", "[[A=B]] and [[A>B]]", "still none"]
    )
    judge = FakePool(lambda method, conversation, params: [next(labels)])
    state = arena_state()
    assert state["samples"] == [] and state["arena_answers"] == ["model haiku", "baseline haiku"]
    sampling = EvaluateConfig.model_fields["sampling"].default
    ArenaHardJudgeStep({"j1": judge, "j2": judge}, sampling)([state])
    game1, game2 = judge.calls[0][1]
    assert game1[0]["role"] == "system" and "[[A>>B]]" in game1[0]["content"]
    assert game1[1]["content"].index("baseline haiku") < game1[1]["content"].index("model haiku")
    assert game2[1]["content"].index("model haiku") < game2[1]["content"].index("baseline haiku")
    # j2's first game had no label: it alone was asked again (a third call), and still gave none.
    assert [len(items) for _, items in judge.calls] == [2, 2, 1]
    verdicts = [
        (v["judge"], v["game"], v["verdict"], v["attempts"]) for v in state["arena_verdicts"]
    ]
    assert verdicts == [
        ("j1", 1, "B>>A", 1),
        ("j1", 2, "A>B", 1),
        ("j2", 2, None, 1),
        ("j2", 1, None, 2),
    ]
    # j1: the model (B in game 1) wins strongly, then (A in game 2) slightly: 3 + 1 battles,
    # each recorded as (baseline, model, winner).
    battles = arena_battles(state["arena_verdicts"], "policy", "gpt-4-0314")
    assert battles == [("gpt-4-0314", "policy", "model_b")] * 4


@pytest.mark.parametrize(
    "replies",
    [
        ["Mine first... [[B>>A]]"],
        ["My answer is long, and I ran out of room", "My final verdict is: [[A>B]]"],
        ["no label", "still none"],
        ["no label", "[[A>B]], or rather [[B>A]]"],
        ["[[A>B", "]]"],  # a label split across the replies is none
        ["My final verdict: [[B<A]]"],  # mirrored: a label, so no retry, but no verdict
        ["[[A=B]] and [[A>B]]"],
    ],
)
def test_each_game_is_judged_and_asked_again_as_arena_hard_autos_judging_loop(replies):
    oracle = pytest.importorskip("tests.support.arena_hard_auto")

    def reply(messages):
        return replies[(len(messages) - 2) // 2]  # the judge's replies so far

    judge = FakePool(lambda method, messages, params: [reply(messages)])
    state = arena_state()
    ArenaHardJudgeStep({"j": judge}, EvaluateConfig.model_fields["sampling"].default)([state])
    sent = [messages for _, requests in judge.calls for messages in requests]
    for verdict in state["arena_verdicts"]:
        user = sent[verdict["game"] - 1][1]["content"]
        reference = oracle.judge_game(reply, oracle.JUDGE_SYSTEM_PROMPT, user)
        assert [m for m in sent if m[1]["content"] == user] == reference["asked"]
        assert verdict["raw"] == reference["judgment"].removeprefix("\n")
        assert verdict["attempts"] == len(reference["asked"])
        label = reference["score"]
        assert verdict["verdict"] == (label if label in oracle._VERDICT_OUTCOME else None)


class CharacterEncoding:
    """Stands in for tiktoken's encoding: a token per character."""

    def encode(self, text, disallowed_special):
        return list(text)


def arena_rows():
    wins = [
        {"judge": "j", "game": g, "verdict": v, "raw": "", "attempts": 1}
        for g, v in ((1, "B>A"), (2, "A>B"))
    ]
    losses = [
        {"judge": "j", "game": g, "verdict": v, "raw": "", "attempts": 1}
        for g, v in ((1, "A>B"), (2, "B>A"))
    ]
    return [
        row(1.0, "# Title\n- a\n- b " * 30) | {"arena_verdicts": wins},
        row(1.0, "**bold** words " * 20) | {"arena_verdicts": wins},
        row(0.0, "short") | {"arena_verdicts": losses},
    ]


def test_arena_hard_results_are_arena_hard_autos_bt_score_with_its_interval(length_encoding):
    length_encoding(CharacterEncoding)
    result = benchmark_results(arena_rows(), "policy", "gpt-4-0314", 0, 50, style_control=True)
    bt = result["bt"]
    assert bt["method"] == "arena-hard-auto v0.1"
    assert bt["score"] == pytest.approx(100 * 2 / 3, abs=0.01)  # 4 wins, 2 losses
    assert bt["lower"] <= bt["score"] <= bt["upper"]
    assert bt["style_controlled"] is not None
    assert bt["style_length_unit"] == "tiktoken gpt-3.5-turbo"


def test_style_control_records_that_it_counted_words_where_tiktoken_cannot_load(length_encoding):
    def offline():
        raise OSError("no cached encoding and no internet")

    length_encoding(offline)
    rows = arena_rows()
    bt = benchmark_results(rows, "policy", "gpt-4-0314", 0, 50, style_control=True)["bt"]
    assert bt["style_length_unit"] == "words" and bt["style_controlled"] is not None
    plain = benchmark_results(rows, "policy", "gpt-4-0314", 0, 50)["bt"]
    assert plain["style_controlled"] is None and plain["style_length_unit"] is None
    assert {k: plain[k] for k in ("score", "lower", "upper")} == {
        k: bt[k] for k in ("score", "lower", "upper")
    }


def test_the_lc_is_alpaca_evals_with_each_questions_difficulty_and_else_a_labelled_fallback():
    from moaa_ray.core.winrates import GamedBaseline, length_controlled_win_rate

    difficulty = {"0": -1.5, "1": 0.2, "2": 2.0, "3": 0.7}
    gamed = GamedBaseline(comparisons=[(0.6, -1.0, -1.5), (0.4, 1.0, -1.5)], difficulty=difficulty)
    scores = [1.0, 0.0, 1.0, 0.5] * 10
    rows = [row(s, "x" * (10 + i)) | {"question_id": str(i % 4)} for i, s in enumerate(scores)]
    expected = length_controlled_win_rate(
        scores,
        [10 + i for i in range(40)],
        [len("baseline")] * 40,
        instruction_difficulty=[difficulty[str(i % 4)] for i in range(40)],
        gamed_baseline=gamed.comparisons,
    )

    result = benchmark_results(rows, "policy", "base", 0, 10, gamed_baseline=gamed)
    beyond = benchmark_results(
        [*rows, row(1.0) | {"question_id": "805"}], "policy", "base", 0, 10, gamed_baseline=gamed
    )

    assert result["lc_win_rate"] == pytest.approx(expected)
    assert result["lc_win_rate_kind"] == "length_controlled_v1"
    assert result["lc_win_rate_fallback_reason"] is None
    assert beyond["lc_win_rate_kind"] == "fallback"
    assert beyond["lc_win_rate_fallback_reason"] == (
        "the gamed baseline has no instruction difficulty for 1 of 41 questions (first ['805']): "
        "it has AlpacaEval's 805 instructions by position"
    )


def verdict_row(correct, share=None):
    """A verified question's row: its first answer's verdict and its samples' share of right ones."""
    return {"correct": correct, "sample_accuracy": share if share is not None else correct}


def test_verified_results_are_accuracy_over_the_answers_the_verifier_could_check():
    rows = [verdict_row(c) for c in (True, False, None, True)]
    low, high = wilson_interval(2, 3)
    assert verified_results(rows) == {
        "accuracy": 0.6667,
        "accuracy_ci": [round(low, 4), round(high, 4)],
        "samples_per_question": 1,
        "correct": 2,
        "verifiable": 3,
        "total": 4,
        "format": "verified",
        "sources": {"accuracy": ACCURACY},
    }
    assert verified_results([verdict_row(None)])["accuracy"] is None
    assert verified_results([verdict_row(None)])["accuracy_ci"] is None
    assert verified_results([])["accuracy"] is None


def test_several_samples_per_question_average_and_their_interval_is_over_questions():
    shares = [1.0, 0.75, 0.25, 0.0, 0.5, 0.0]
    rows = [verdict_row(s >= 0.5, s) for s in shares]
    result = verified_results(rows, samples=4)
    assert result["accuracy"] == round(sum(shares) / 6, 4) and result["samples_per_question"] == 4
    assert result["correct"] == 3  # first answers right
    # the t-free normal interval over the 6 questions, as scipy computes it
    sem = stats.sem(shares)
    low, high = stats.norm.interval(0.95, loc=sum(shares) / 6, scale=sem)
    assert result["accuracy_ci"] == [round(max(0.0, low), 4), round(min(1.0, high), 4)]
    # the same questions answered once each get the wider binomial interval
    once = verified_results([verdict_row(s >= 0.5) for s in shares])
    assert once["accuracy_ci"] == [round(b, 4) for b in wilson_interval(3, 6)]


@pytest.mark.parametrize(
    ("score", "correct", "grades", "scored"),
    [
        (0.5, None, [], True),  # the judges decided
        (None, False, [], True),  # the verifier checked: wrong is a result
        (None, None, [{"turn": 1, "score": None}, {"turn": 2, "score": 7.0}], True),
        (None, None, [{"turn": 1, "score": None}], False),  # no rating
        (None, None, [], False),  # the judges abstained
    ],
)
def test_a_question_counts_as_scored_only_with_a_result(score, correct, grades, scored):
    assert is_scored({"score": score, "correct": correct, "grades": grades}) is scored


def test_the_verifier_sees_the_models_conversation_and_its_last_answer():
    assert verify_answers(verify, ["What is 2 + 3?"], ["It is 5."]) == (True, 1.0)
    turns, answers = ["What is 1 + 1?", "Then: What is 2 + 5?"], ["2", "6"]
    assert verify_answers(verify, turns, answers) == (False, 0.0)  # the last turn is checked
    more = ["7", "It is 7.", "seven?"]  # the last turn's other samples ("seven?" names no number)
    assert verify_answers(verify, turns, answers, more) == (False, 0.5)
    seen = []
    verify_answers(lambda messages, answer: seen.append((messages, answer)), turns, answers)
    assert seen == [
        (
            [
                {"role": "user", "content": "What is 1 + 1?"},
                {"role": "assistant", "content": "2"},
                {"role": "user", "content": "Then: What is 2 + 5?"},
            ],
            "6",
        )
    ]
    assert verify_answers(lambda messages, answer: 1, turns, answers) == (True, 1.0)
    assert verify_answers(lambda messages, answer: None, turns, answers) == (None, None)


def test_only_the_model_answers_a_verified_question_and_no_judge_sees_it():
    model = FakePool(lambda method, conversation, params: ["model says 5"])
    base = FakePool(lambda method, conversation, params: ["base says 5"])
    question = BenchmarkQuestion("1", ["What is 2 + 3?"])
    verified = new_question_state("v", question, "add", None, "verified")
    judged = new_question_state("j", question, "mt", None, "ensemble")
    pools = {"model_answers": model, "baseline_answers": base}
    AnswerStep(pools, 0, EvaluateConfig.model_fields["sampling"].default)([verified, judged])
    assert verified["model_answers"] == ["model says 5"] and verified["baseline_answers"] == []
    assert verified["samples"] == [] and judged["samples"] == ["model says 5", "base says 5"]
    assert len(base.calls[0][1]) == 1
    seen = []
    JudgedOnly(seen.extend)([verified, judged])
    assert seen == [judged]


def test_the_model_samples_a_verified_questions_last_turn_num_samples_times():
    def reply(method, conversation, params):
        return [f"answer {i} to {conversation[-1]['content']}" for i in range(params.n)]

    model, base = FakePool(reply), FakePool(reply)
    two_turns = BenchmarkQuestion("1", ["What is 1 + 1?", "And 2 + 5?"])
    verified = new_question_state("v", two_turns, "add", None, "verified")
    judged = new_question_state("j", BenchmarkQuestion("2", ["Hi?"]), "mt", None, "ensemble")
    pools = {"model_answers": model, "baseline_answers": base}
    sampling = SamplingConfig(temperature=1.0)
    for turn in (0, 1):
        AnswerStep(pools, turn, sampling, num_samples=3)([verified, judged])
    assert verified["model_answers"] == ["answer 0 to What is 1 + 1?", "answer 0 to And 2 + 5?"]
    assert verified["more_answers"] == ["answer 1 to And 2 + 5?", "answer 2 to And 2 + 5?"]
    assert judged["model_answers"] == ["answer 0 to Hi?"] and judged["more_answers"] == []
    assert [len(items) for _, items in model.calls] == [2, 1]  # turn 1: both, n=1; turn 2: v


def verified_config(tmp_path, verifier="moaa_ray.tasks.addition:verify"):
    prompts = tmp_path / "addition.jsonl"
    rows = [{"id": f"q{i}", "prompt": f"What is {i} + 2?"} for i in range(3)]
    rows.append({"id": "chat", "prompt": "Hello?"})
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return MoaaConfig.model_validate(
        {
            "verifier": verifier,
            "models": {"a": {"path": "tiny:llama-a", "engine": "simulated"}},
            "evaluate": {
                "model": "a",
                "benchmarks": [{"path": str(prompts), "format": "verified"}],
            },
        }
    )


def test_the_stage_verifies_written_answers_and_reports_accuracy(tmp_path):
    config = verified_config(tmp_path)
    assert config.evaluate is not None
    stage = EvaluationStage(config, config.evaluate, RunDir(tmp_path / "run"), "evaluate")
    states, rejects = stage.load()
    assert rejects == [] and all(s["kind"] == "verified" for s in states)
    for state, answer in zip(states, ["2", "3 for sure", "no idea", "Hi!"], strict=True):
        state["model_answers"] = [answer]
    assert stage.write(states).written == 4
    summary = stage.summarize()
    assert summary["accuracy"] == {"addition": 0.6667}
    assert summary["benchmarks"]["addition"]["samples_per_question"] == 1
    assert summary["benchmarks"]["addition"]["correct"] == 2
    assert summary["benchmarks"]["addition"]["verifiable"] == 3
    assert stage.unused(summary) == {"the verifier could not check the answer": 1}  # "Hi!"
    rows = stage.stage.read().to_pylist()
    assert [r["correct"] for r in rows] == [True, True, False, None]
    assert all(r["baseline_answers"] == [] and r["score"] is None for r in rows)
    report = (tmp_path / "run" / "evaluate" / "report.md").read_text()
    assert "| a | 66.7 | 20.8–93.8 | 1 | 2 / 3 | 4 |" in report


def test_the_stage_averages_num_samples_answers_per_verified_question(tmp_path):
    config = verified_config(tmp_path)
    assert config.evaluate is not None
    ev = config.evaluate.model_copy(
        update={"num_samples": 2, "sampling": SamplingConfig(temperature=1.0)}
    )
    stage = EvaluationStage(config, ev, RunDir(tmp_path / "run"), "evaluate")
    states, _ = stage.load()
    answers = [("2", "2"), ("3", "0"), ("0", "4"), ("Hi!", "Hello")]
    for state, (first, other) in zip(states, answers, strict=True):
        state["model_answers"], state["more_answers"] = [first], [other]
    stage.write(states)
    result = stage.summarize()["benchmarks"]["addition"]
    assert result["accuracy"] == 0.6667  # (1 + 0.5 + 0.5) / 3 questions the verifier can check
    assert result["correct"] == 2 and result["samples_per_question"] == 2
    rows = stage.stage.read().to_pylist()
    assert [r["sample_accuracy"] for r in rows] == [1.0, 0.5, 0.5, None]
    assert rows[1]["more_answers"] == ["0"]


def test_the_verifier_is_part_of_the_fingerprint_of_verified_benchmarks_only(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)

    def fingerprint(config):
        return EvaluationStage(config, config.evaluate, RunDir(tmp_path / "run"), "e").fingerprint()

    config = verified_config(tmp_path)
    assert fingerprint(config)["verifier"] == "moaa_ray.tasks.addition:verify"
    other = verified_config(tmp_path, "moaa_ray.tasks.addition:is_correct")
    assert fingerprint(other)["verifier"] == "moaa_ray.tasks.addition:is_correct"
    judged = load_config(ROOT / "configs" / "demo.yaml")
    assert "verifier" not in fingerprint(judged)


def graded_only_config(tmp_path, questions):
    path = tmp_path / "mt.json"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return MoaaConfig.model_validate(
        {
            "models": {
                "a": {"path": "tiny:llama-a", "engine": "simulated"},
                "g": {"path": "tiny:qwen2-b", "engine": "simulated"},
            },
            "evaluate": {
                "model": "a",
                "grader": "g",
                "benchmarks": [{"path": str(path), "name": "mt", "baseline": "none"}],
            },
        }
    )


MT_BENCH = [
    {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Now shorter."]},
    {"question_id": 111, "category": "math", "turns": ["2 + 2?", "Times 3?"], "reference": ["4", "12"]},
]  # fmt: skip


def test_a_graded_only_benchmark_is_answered_by_the_model_and_graded_without_judges(tmp_path):
    config = graded_only_config(tmp_path, MT_BENCH)
    ev = config.evaluate
    assert ev is not None and ev.judging is None
    stage = EvaluationStage(config, ev, RunDir(tmp_path / "run"), "evaluate")
    states, rejects = stage.load()
    assert rejects == [] and all(s["kind"] == "graded" for s in states)
    assert evaluate_module._models(ev, states) == ["a", "g"]  # no baseline model, no judges
    model = FakePool(lambda method, conversation, params: [f"says {len(conversation)}"])
    grader = FakePool(lambda method, conversation, params: ["Rating: [[6]]"])
    steps = evaluate_module._steps(ev, {"a": model, "g": grader}, states)
    assert [step.name for step in steps] == ["answer_turn_1", "answer_turn_2", "grade"]
    assert steps[-1].apply.sampling == JudgingConfig.model_fields["sampling"].default
    for step in steps:
        step.apply(states)
    assert all(s["model_answers"] == ["says 1", "says 3"] for s in states)
    assert all(s["baseline_answers"] == [] and s["samples"] == [] for s in states)

    assert stage.write(states).written == 2
    rows = stage.stage.read().to_pylist()
    assert all(r["score"] is None and r["baseline_answers"] == [] for r in rows)
    assert not list((stage.stage.path / "judgments").glob("*.parquet"))  # nobody judged
    results = stage.summarize()["benchmarks"]["mt"]
    assert results == {
        "baseline": None,
        "graded": 2,
        "mt_bench": {
            "per_turn": {"1": 6.0, "2": 6.0},
            "per_category": {"math": 6.0, "writing": 6.0},
            "overall": 6.0,
            "num_graded": 4,
            "num_missing": 0,
        },
        "truncated_answers": {"model": 0},
        "shortened_prompts": 0,
        "sources": {"mt_bench": MT_BENCH_GRADES},
    }  # grades only: no win rates, no BT score, no judge rates
    report = (tmp_path / "run" / "evaluate" / "report.md").read_text()
    assert "### mt" in report and "| a | 6.00 | 6.00 | 6.00 | 6.00 | 6.00 |" in report
    assert "win / tie / loss" not in report


def test_a_benchmarks_answer_length_and_the_graders_own_sampling_reach_the_engines(tmp_path):
    config = graded_only_config(tmp_path, MT_BENCH)
    ev = config.evaluate
    assert ev is not None
    bench = ev.benchmarks[0].model_copy(update={"max_new_tokens": 1024})
    ev = ev.model_copy(update={"benchmarks": [bench], "grading_sampling": GradingSamplingConfig()})
    states, _ = question_states(ev)
    model = FakePool(lambda method, conversation, params: [f"{params.max_new_tokens} tokens"])
    grader = FakePool(lambda method, conversation, params: [f"{params} Rating: [[6]]"])
    for step in evaluate_module._steps(ev, {"a": model, "g": grader}, states):
        step.apply(states)
    assert all(s["model_answers"] == ["1024 tokens", "1024 tokens"] for s in states)
    # FastChat's request to its grader: temperature 0, 2048 tokens, no seed.
    expected = SamplingParams(0.0, 1.0, 2048, 1, None)
    assert {g["raw"] for s in states for g in s["grades"]} == {f"{expected} Rating: [[6]]"}


def test_a_graded_only_benchmark_whose_file_is_not_mt_bench_is_refused_on_load(tmp_path):
    alpaca = [{"instruction": "Name a color.", "output": "Blue.", "generator": "g"}]
    config = graded_only_config(tmp_path, alpaca)
    assert config.evaluate is not None  # format auto: the config cannot tell
    stage = EvaluationStage(config, config.evaluate, RunDir(tmp_path / "run"), "evaluate")
    with pytest.raises(ValueError, match=r"benchmark 'mt': baseline 'none' \(grading only\) is "):
        stage.load()
