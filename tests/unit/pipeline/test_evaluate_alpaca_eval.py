"""AlpacaEval 2's own judge in the evaluation stage, without a cluster: the step, its engines'
readings, the rows it writes, the stage's choice of it, and the LC win rate the stage reports."""

import json
import math
import re
from types import SimpleNamespace

import pytest

from moaa_ray.config import EvaluateConfig, MoaaConfig
from moaa_ray.core.alpaca_eval_judge import outputs_switched
from moaa_ray.core.benchmarks import BenchmarkQuestion
from moaa_ray.core.winrates import LC_FALLBACK_LABEL
from moaa_ray.pipeline.evaluate.questions import new_question_state, question_states
from moaa_ray.pipeline.evaluate.report import render_report
from moaa_ray.pipeline.evaluate.results import benchmark_results
from moaa_ray.pipeline.evaluate.rows import write_batch
from moaa_ray.pipeline.evaluate.stage import EvaluationStage, _steps
from moaa_ray.pipeline.evaluate.steps import AlpacaEvalJudgeStep, AnswerStep
from moaa_ray.stages.rundir import RunDir, StageDir
from tests.support.alpaca_eval_lc import (
    alpaca_eval_lc,
    synthetic_gamed,
    synthetic_run,
    write_df_gamed,
)
from tests.support.fakes import FakePool

SAMPLING = EvaluateConfig.model_fields["sampling"].default
SWITCHED, UNSWITCHED = "Question 1?", "Question 0?"  # alpaca_eval shows the model first, then last


class EnginePool(FakePool):
    """A fake pool of one engine kind, which decides how the step asks it."""

    def __init__(self, engine, reply):
        super().__init__(reply)
        self.config = SimpleNamespace(engine=engine, num_replicas=(1, 1))


def shown_label(conversation, answer):
    """The label (``m`` or ``M``) under which ``answer`` is shown in an AlpacaEval judge prompt."""
    first, second = re.findall(r'"output": """(.*?)"""', conversation[1]["content"], re.DOTALL)
    assert answer in (first, second)
    return "m" if first == answer else "M"


def prefers(answer):
    """Replies of a judge that prefers ``answer``, whatever engine asks it."""

    def reply(method, conversation, *args):
        label = shown_label(conversation, answer)
        if method == "choice_logprobs":
            return [0.0 if choice == label else -math.inf for choice in args[1]]
        if method == "first_token_logprobs":
            return (label, {label: -0.01, "m" if label == "M" else "M": -6.0, "The": -7.0})
        return [label]

    return reply


def alpaca_state(instruction, model="model output", baseline="baseline output", row_id=None):
    question = BenchmarkQuestion("0", [instruction])
    state = new_question_state(row_id or instruction, question, "alpaca", [baseline], "alpaca_eval")
    state["model_answers"] = [model]
    AnswerStep({}, 0, SAMPLING)([state])
    return state


def test_each_engine_is_asked_for_the_first_token_as_alpaca_eval_reads_it():
    assert outputs_switched(SWITCHED) and not outputs_switched(UNSWITCHED)
    states = [alpaca_state(SWITCHED), alpaca_state(UNSWITCHED)]
    assert states[0]["samples"] == [] and states[0]["alpaca_answers"] == [
        "model output",
        "baseline output",
    ]
    pools = {
        engine: EnginePool(engine, prefers("model output"))
        for engine in ("hf", "openai_http", "function")
    }
    AlpacaEvalJudgeStep(pools)(states)
    [(method, _)] = pools["hf"].calls
    assert method == "choice_logprobs"
    [(method, conversations)] = pools["openai_http"].calls
    assert method == "first_token_logprobs"
    assert [shown_label(c, "model output") for c in conversations] == ["m", "M"]
    assert conversations[0][0]["role"] == "system" and "m or M" in conversations[0][1]["content"]
    assert pools["function"].calls[0][0] == "chat"
    for state, switched in zip(states, (True, False), strict=True):
        preferences = state["alpaca_preferences"]
        assert [p["judge"] for p in preferences] == ["hf", "openai_http", "function"]
        assert {p["switched"] for p in preferences} == {switched}
        assert [p["preference"] for p in preferences] == pytest.approx([2.0] * 3, abs=1e-2)
    assert json.loads(states[0]["alpaca_preferences"][0]["raw"]) == {"m": 0.0, "M": -math.inf}
    assert states[0]["alpaca_preferences"][2]["raw"] == "m"


def test_the_requests_are_alpaca_evals_one_token_at_temperature_1_with_the_top_5():
    seen = []

    def reply(method, conversation, *args):
        seen.append(args)
        return ("M", None)  # an endpoint without log-probabilities: the text is read

    state = alpaca_state(UNSWITCHED)
    AlpacaEvalJudgeStep({"gpt": EnginePool("openai_http", reply)})([state])
    [(params, top)] = seen
    assert (params.temperature, params.max_new_tokens, params.n, params.seed) == (1.0, 1, 1, None)
    assert top == 5
    assert state["alpaca_preferences"][0]["preference"] == 2.0


def test_identical_outputs_are_a_tie_unasked_and_a_judge_without_m_or_m_abstains():
    same = alpaca_state(UNSWITCHED, model="same", baseline="same")
    other = alpaca_state(SWITCHED)
    judge = EnginePool("openai_http", lambda method, conversation, *args: ("The", {"The": -0.1}))
    AlpacaEvalJudgeStep({"j": judge})([same, other])
    assert len(judge.calls[0][1]) == 1
    assert same["alpaca_preferences"] == [
        {"judge": "j", "preference": 1.5, "switched": False, "raw": None}
    ]
    assert other["alpaca_preferences"][0]["preference"] is None


def evaluate_config():
    return EvaluateConfig.model_validate(
        {"benchmarks": [{"path": "alpaca.json"}], "model": "m", "judging": {"judges": ["j"]}}
    )


def test_a_model_always_preferred_wins_every_question_and_a_win_rate_of_100(tmp_path):
    instructions = [SWITCHED, UNSWITCHED, "Name a color.", "Explain recursion."]
    states = [alpaca_state(i, model=f"model {n}") for n, i in enumerate(instructions)]
    for state in states:
        state["benchmark"] = "alpaca"

    def reply(method, conversation, *args):
        model = next(s["model_answers"][0] for s in states if s["turns"][0] in str(conversation))
        return prefers(model)(method, conversation, *args)

    AlpacaEvalJudgeStep({"j": EnginePool("vllm", reply)})(states)
    stage = StageDir(tmp_path / "evaluate")
    write_batch(states, evaluate_config(), None, stage, StageDir(tmp_path / "judgments"))
    rows = stage.read().to_pylist()
    assert [r["alpaca_preferences"][0]["switched"] for r in rows] == [True, False, False, False]
    result = benchmark_results(rows, "m", "alpaca-answers", 0, 10)
    assert result["win_rate"] == pytest.approx(100.0)
    assert (result["wins"], result["ties"], result["losses"]) == (4, 0, 0)
    assert result["abstain_rate"] == 0.0 and result["lc_win_rate"] is not None
    report = render_report([("m", {"benchmarks": {"alpaca": result}})])
    assert "| m | 4 | 4 / 0 / 0 | 100.0 |" in report  # the report reads the same keys


def test_the_stage_judges_as_alpaca_eval_only_where_a_benchmark_names_it(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([{"instruction": "Name a color.", "output": "Blue."}]))
    ev = EvaluateConfig.model_validate(
        {
            "benchmarks": [
                {"path": str(path), "name": "official", "judge": "alpaca_eval"},
                {"path": str(path), "name": "auto"},
            ],
            "model": "m",
            "judging": {"judges": ["j"]},
        }
    )
    states, _ = question_states(ev)
    assert [(s["benchmark"], s["kind"]) for s in states] == [
        ("official", "alpaca_eval"),
        ("auto", "ensemble"),
    ]
    pools = {name: EnginePool("hf", None) for name in ("m", "j")}
    names = [step.name for step in _steps(ev, pools, states)]
    assert "alpaca_eval_judges" in names and "arena_hard_judges" not in names
    assert "alpaca_eval_judges" not in [step.name for step in _steps(ev, pools, states[1:])]


def alpaca_eval_stage(tmp_path, baseline_lengths, df_gamed=None) -> EvaluationStage:
    """The evaluation stage of an AlpacaEval file whose baseline answers have the given lengths,
    judged as the leaderboard judges, with ``df_gamed`` as its gamed baseline when given."""
    questions = tmp_path / "alpaca_eval.json"
    rows = [
        {"instruction": f"Question {i}?", "output": "b" * n} for i, n in enumerate(baseline_lengths)
    ]
    questions.write_text(json.dumps(rows))
    benchmark = {"path": str(questions), "name": "alpaca", "judge": "alpaca_eval"}
    if df_gamed is not None:
        benchmark["gamed_baseline_path"] = str(df_gamed)
    models = {name: {"path": "tiny:llama-a", "engine": "simulated"} for name in ("m", "j")}
    evaluate = {"model": "m", "benchmarks": [benchmark], "judging": {"judges": ["j"]}}
    config = MoaaConfig.model_validate({"models": models, "evaluate": evaluate})
    assert config.evaluate is not None
    return EvaluationStage(config, config.evaluate, RunDir(tmp_path / "run"), "evaluate")


def judge_as_given(stage: EvaluationStage, scores, model_lengths) -> dict:
    """Answer and judge every question of ``stage`` as given: the model's answers of the given
    lengths, one judge's preference ``1 + score`` (None: it abstained). Returns the summary."""
    states, _ = stage.load()
    for state, score, length in zip(states, scores, model_lengths, strict=True):
        state["model_answers"] = ["m" * length]
        preference = None if score is None else 1.0 + score
        state["alpaca_preferences"] = [
            {"judge": "j", "preference": preference, "switched": False, "raw": None}
        ]
    stage.write(states)
    return stage.summarize()


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_with_alpaca_evals_gamed_baseline_the_stage_reports_alpaca_evals_own_lc(
    monkeypatch, tmp_path
):
    scores, model_lengths, baseline_lengths, difficulty = synthetic_run(seed=6, n=300)
    df_gamed = write_df_gamed(tmp_path / "df_gamed.csv", synthetic_gamed(6, difficulty))
    expected = alpaca_eval_lc(
        monkeypatch, df_gamed, scores, model_lengths, baseline_lengths, "length_controlled_v1"
    )

    stage = alpaca_eval_stage(tmp_path, baseline_lengths, df_gamed)
    summary = judge_as_given(stage, scores, model_lengths)

    result = summary["benchmarks"]["alpaca"]
    assert result["lc_win_rate_kind"] == "length_controlled_v1"
    assert result["lc_win_rate_fallback_reason"] is None
    assert result["lc_win_rate"] == pytest.approx(expected, abs=0.02)
    report = (tmp_path / "run" / "evaluate" / "report.md").read_text()
    assert f"| {result['lc_win_rate']:.1f} |" in report and LC_FALLBACK_LABEL not in report


def test_without_the_gamed_baseline_the_lc_is_a_labelled_fallback_until_it_is_given(tmp_path):
    scores, model_lengths, baseline_lengths, difficulty = synthetic_run(seed=7, n=40)
    stage = alpaca_eval_stage(tmp_path, baseline_lengths)

    result = judge_as_given(stage, scores, model_lengths)["benchmarks"]["alpaca"]

    saved = json.loads((tmp_path / "run" / "evaluate" / "results.json").read_text())
    assert saved["benchmarks"]["alpaca"] == result
    assert result["lc_win_rate_kind"] == "fallback"
    reason = result["lc_win_rate_fallback_reason"]
    assert reason.startswith("no gamed_baseline_path (AlpacaEval's df_gamed.csv), so")
    report = (tmp_path / "run" / "evaluate" / "report.md").read_text()
    assert f"| {result['lc_win_rate']:.1f} (fallback) |" in report
    assert f"{LC_FALLBACK_LABEL}: {reason}." in report
    # Given afterwards, the file changes no judged row: the stage keeps them and rescores.
    df_gamed = write_df_gamed(tmp_path / "df_gamed.csv", synthetic_gamed(7, difficulty))
    given = alpaca_eval_stage(tmp_path, baseline_lengths, df_gamed)
    assert given.fingerprint() == stage.fingerprint()
    given.load()
    assert given.summarize()["benchmarks"]["alpaca"]["lc_win_rate_kind"] == "length_controlled_v1"
