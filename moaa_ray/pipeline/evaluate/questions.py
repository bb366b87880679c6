"""The evaluation stage's questions: their states, ids and baselines, and each side's conversation.

A question's state is an :class:`~moaa_ray.core.eval_question.EvalQuestion`: a tournament state
(:mod:`moaa_ray.core.tournament`) plus the question, its kind (who answers it, who compares the pair
and whether the grader rates it, set here from the benchmark's config), both sides' answers and
their scores. Once both sides have answered every turn, ``samples`` is ``[model's last answer,
baseline's last answer]``: the one pair the judging steps compare; ``arena_answers`` or
``alpaca_answers`` instead where the benchmark's own judge compares it (``judge: arena_hard`` or
``alpaca_eval``).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from moaa_ray.config import BenchmarkConfig, EvaluateConfig
from moaa_ray.core.benchmarks import (
    BenchmarkQuestion,
    detect_benchmark_format,
    load_eval_questions,
)
from moaa_ray.core.eval_question import (
    EvalQuestion,
    Judge,
    QuestionKind,
    Side,
    question_kind,
)
from moaa_ray.core.mt_bench import answer_temperature
from moaa_ray.core.tournament import new_tournament

SIDES: tuple[Side, Side] = ("model_answers", "baseline_answers")


def new_question_state(
    row_id: str,
    question: BenchmarkQuestion,
    benchmark: str,
    baseline: list[str] | None,
    kind: QuestionKind,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
) -> EvalQuestion:
    """The state of a question before answering.

    Args:
        row_id: the question's stable id.
        question: the benchmark question.
        benchmark: the benchmark's key.
        baseline: the file's baseline answer per turn, or None when a baseline model answers.
        kind: who answers, who compares the pair and whether the grader rates the answers.
        temperature: both sides' answer temperature; None: the evaluate section's.
        max_new_tokens: both sides' longest answer; None: the evaluate section's.
    """
    prompt = [{"role": "user", "content": turn} for turn in question.turns]
    return {
        **new_tournament(row_id, prompt, f"{benchmark}#{question.question_id}"),
        "benchmark": benchmark,
        "question_id": question.question_id,
        "category": question.category,
        "turns": list(question.turns),
        "reference": question.reference,
        "kind": kind,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "model_answers": [],
        "more_answers": [],
        "baseline_answers": list(baseline or []),
        "truncated": dict.fromkeys(SIDES, 0),  # answers cut at max_new_tokens, per side
        "grades": [],
        "arena_answers": [],
        "arena_verdicts": [],
        "alpaca_answers": [],
        "alpaca_preferences": [],
    }


def answer_conversation(turns: list[str], answers: list[str], turn: int) -> list[dict[str, str]]:
    """User turns up to ``turn`` (0-based) with this side's own earlier answers in between."""
    messages = []
    for index in range(turn + 1):
        messages.append({"role": "user", "content": turns[index]})
        if index < turn:
            messages.append({"role": "assistant", "content": answers[index]})
    return messages


def transcript(turns: list[str], answers: list[str]) -> str:
    """One side's whole conversation, in FastChat's multi-turn judge layout; one turn: the answer."""
    if len(turns) == 1:
        return answers[0]
    return "\n\n".join(
        f"### User:\n{turn}\n\n### Assistant:\n{answer}"
        for turn, answer in zip(turns, answers, strict=True)
    )


def _format(bench: BenchmarkConfig) -> str:
    """The benchmark's format, as configured or detected from its file."""
    return detect_benchmark_format(Path(bench.path)) if bench.format == "auto" else bench.format


def is_graded_benchmark(bench: BenchmarkConfig) -> bool:
    """Whether the grader rates a benchmark's answers (MT-Bench)."""
    return _format(bench) == "mt_bench"


def question_row_id(benchmark: str, question_id: str) -> str:
    """A stable id for a benchmark question."""
    return hashlib.sha256(json.dumps([benchmark, question_id]).encode()).hexdigest()[:24]


def baseline_name(ev: EvaluateConfig, bench: BenchmarkConfig) -> str | None:
    """The anchor of a benchmark's scores: the baseline model, or the answers file's stem; None
    for a graded-only benchmark (``baseline: none``), which has no anchor."""
    baseline = ev.baseline_of(bench)
    if baseline == "none":
        return None
    if baseline == "model":
        return str(ev.baseline_model)
    return f"{Path(bench.baseline_answers_path or bench.path).stem}-answers"


def _judge(ev: EvaluateConfig, bench: BenchmarkConfig, name: str) -> Judge | None:
    """Who compares a benchmark's pairs, given its format ``name``; None where only the model
    answers (a verified or a graded-only benchmark)."""
    if not ev.judged(bench):
        return None
    if bench.judge == "arena_hard" or (bench.judge == "auto" and name == "arena_hard"):
        return "arena_hard"
    if bench.judge == "alpaca_eval":  # never by auto: see BenchmarkConfig.judge
        return "alpaca_eval"
    return "ensemble"


def question_states(ev: EvaluateConfig) -> tuple[list[EvalQuestion], Counter]:
    """States of every question to evaluate, and per benchmark how many were skipped for want of
    the file's baseline answer.

    Raises:
        ValueError: a graded-only benchmark (``baseline: none``) whose file is not MT-Bench's;
            the config can only refuse a named format, this the one detected from the file.
    """
    states: list[EvalQuestion] = []
    skipped: Counter = Counter()
    for bench in ev.benchmarks:
        questions = load_eval_questions(
            bench.path, bench.format, bench.reference_answers_path, bench.baseline_answers_path
        )
        name = _format(bench)  # detected from the file once, not per question
        if ev.baseline_of(bench) == "none" and name != "mt_bench":
            raise ValueError(
                f"benchmark {bench.key()!r}: baseline 'none' (grading only) is for mt_bench "
                f"benchmarks, and {bench.path} is {name}"
            )
        graded = name == "mt_bench"
        kind = question_kind(_judge(ev, bench, name), graded)
        for question in questions[: bench.limit]:
            baseline = None
            if ev.baseline_of(bench) == "answers":
                baseline = question.baseline_answer
                if baseline is None or len(baseline) < len(question.turns):
                    skipped[bench.key()] += 1
                    continue
            row_id = question_row_id(bench.key(), question.question_id)
            temperature = None
            if graded and bench.category_temperatures:
                temperature = answer_temperature(question.category)
            states.append(
                new_question_state(
                    row_id, question, bench.key(), baseline, kind, temperature, bench.max_new_tokens
                )
            )
    return states, skipped
