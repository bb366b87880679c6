"""The evaluation stage: the model against a baseline on benchmark questions, judged by the ensemble.

Per question the model answers every turn (its own earlier answers in context); a baseline model does
the same, or the benchmark file's baseline answers stand in (questions without one are skipped and
counted). The judges compare the final-turn answers in both orders, the aggregator judge deciding if
set, and the grader rates MT-Bench answers 1-10 per turn. Reported as MoAA (arXiv 2505.03059) does:
win/tie/loss, AlpacaEval-2 length-controlled win rate, Arena-Hard Bradley-Terry score with a bootstrap
interval, MT-Bench grades. On a ``verified`` benchmark only the model answers and nobody judges: the
config's verifier checks each final answer on the driver; the benchmark reports exact-match accuracy.

Writes, under ``<run_dir>/<stage>/``: ``part-*.parquet`` (one row per question: answers, score, grades),
``judgments/`` (the audit table of every judgment), ``rejects.jsonl`` and ``results.json``. A rerun
answers and judges only questions not yet written.
A question's state is a tournament state (:mod:`moaa_ray.core.tournament`) plus ``question_id``,
``category``, ``turns``, ``reference``, ``model_answers``, ``baseline_answers`` (filled up front when
the benchmark file holds them), ``graded``, ``grades`` and ``verified``. Once both sides have
answered every turn, ``samples`` is ``[model's last answer, baseline's last answer]``: the one pair the
judging steps compare.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from moaa_ray.callables import load_callable
from moaa_ray.config import (
    BenchmarkConfig,
    EvaluateConfig,
    InputConfig,
    MoaaConfig,
    SamplingConfig,
)
from moaa_ray.core.arena_hard import (
    answer_style_counts,
    arena_hard_scores,
    battles_from_verdicts,
    parse_arena_hard_verdict,
    render_arena_hard_judge_prompt,
)
from moaa_ray.core.benchmarks import EvalQuestion, detect_benchmark_format, load_eval_questions
from moaa_ray.core.context import Prompt
from moaa_ray.core.mt_bench import (
    GRADE_PREFIX,
    answer_temperature,
    expected_grade,
    mt_bench_summary,
    needs_reference,
    parse_rating,
    render_grade_prompt,
)
from moaa_ray.core.tournament import judgment_stats, new_tournament, pair_comparisons
from moaa_ray.core.verification import Verifier, share
from moaa_ray.core.winrates import (
    bootstrap_ci,
    bradley_terry_battles,
    length_controlled_win_rate,
    load_instruction_difficulty,
    win_tie_loss,
)
from moaa_ray.engines.base import SamplingParams
from moaa_ray.engines.pools import ModelPool, PoolSet
from moaa_ray.pipeline.inputs import fingerprint_input
from moaa_ray.pipeline.preference_graph import (
    LOGPROB_REPLY_TOKENS,
    fit_prompt,
    verdict_rules,
)
from moaa_ray.pipeline.preferences import audit_row, judging_steps
from moaa_ray.pipeline.report import write_report
from moaa_ray.pipeline.streaming import StreamStep, stream_states
from moaa_ray.records import Reject, judgment_schema, mark_failed
from moaa_ray.runs.fingerprint import config_identity, models_identity
from moaa_ray.runs.rundir import RunDir, StageDir
from moaa_ray.runs.runner import BatchOutcome, run_row_stage

logger = logging.getLogger(__name__)

PAIR = (0, 1)  # samples[0] is the model's answer, samples[1] the baseline's
GRADES = [str(grade) for grade in range(1, 11)]
SIDES = ("model_answers", "baseline_answers")


def new_question_state(
    row_id: str,
    question: EvalQuestion,
    source: str,
    baseline: list[str] | None,
    graded: bool,
    temperature: float | None = None,
    arena_hard: bool = False,
    verified: bool = False,
) -> dict:
    """The state of a question before answering.

    Args:
        row_id: the question's stable id.
        question: the benchmark question.
        source: where it came from, for rejects (``benchmark#question_id``).
        baseline: the file's baseline answer per turn, or None when a baseline model answers.
        graded: whether the grader rates the model's answers (MT-Bench).
        temperature: both sides' answer temperature; None: the evaluate section's.
        arena_hard: judged as arena-hard-auto judges (:class:`ArenaHardJudgeStep`), not by the
            ensemble.
        verified: only the model answers; the verifier checks its answer, nobody judges.
    """
    prompt = [{"role": "user", "content": turn} for turn in question.turns]
    state = new_tournament(row_id, prompt, source)
    state.update(
        question_id=question.question_id,
        category=question.category,
        turns=list(question.turns),
        reference=question.reference,
        model_answers=[],
        baseline_answers=list(baseline or []),
        truncated=dict.fromkeys(SIDES, 0),  # answers cut at max_new_tokens, per side
        graded=graded,
        grades=[],
        temperature=temperature,
        arena_hard=arena_hard,
        arena_answers=[],
        arena_verdicts=[],
        verified=verified,
    )
    return state


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


def _params(sampling: SamplingConfig, temperature: float | None = None) -> SamplingParams:
    return SamplingParams(
        sampling.temperature if temperature is None else temperature,
        sampling.top_p,
        sampling.max_new_tokens,
        1,
        sampling.seed,
    )


def _pair_when_answered(state: dict) -> None:
    """Once both sides answered every turn: the pair the judges compare, whole conversations each."""
    answers = [state[side] for side in SIDES]
    if not state["error"] and all(len(a) >= len(state["turns"]) for a in answers):
        pair = [transcript(state["turns"], a[: len(state["turns"])]) for a in answers]
        state["arena_answers" if state["arena_hard"] else "samples"] = pair


def _answers_now(state: dict, side: str, turn: int) -> bool:
    """Whether ``side`` answers ``turn`` (0-based) of a question now; no baseline on verified ones."""
    if state["error"] or len(state["turns"]) <= turn or len(state[side]) != turn:
        return False
    return side == "model_answers" or not state["verified"]


@dataclass(frozen=True)
class AnswerStep:
    """One turn of every question from the model and, where it answers, the baseline model at once."""

    pools: dict[str, ModelPool]  # side ("model_answers" / "baseline_answers") -> its model's pool
    turn: int
    sampling: SamplingConfig

    def __call__(self, states: list[dict]) -> None:
        submitted = []
        for side, pool in self.pools.items():
            by_temperature: dict[float | None, list[dict]] = {}
            for s in states:
                if _answers_now(s, side, self.turn):
                    by_temperature.setdefault(s["temperature"], []).append(s)
            for temperature, asking in by_temperature.items():
                params = _params(self.sampling, temperature)
                live, conversations = [], []
                for s in asking:
                    prompt = Prompt.fixed(answer_conversation(s["turns"], s[side], self.turn))
                    conversation = fit_prompt(pool, s, prompt, params.max_new_tokens)
                    if conversation is not None:
                        live.append(s)
                        conversations.append(conversation)
                submitted.append((side, live, pool.submit("chat", conversations, params)))
        for side, live, refs in submitted:
            for state, completion in zip(live, self.pools[side].collect(refs), strict=True):
                if completion.output is None:
                    mark_failed(state, f"answering failed: {completion.error}")
                else:
                    [answer] = completion.output
                    state[side].append(answer.text)  # judged as written, cut or not (counted)
                    state["truncated"][side] += answer.truncated
        for state in states:
            _pair_when_answered(state)


@dataclass(frozen=True)
class ArenaHardJudgeStep:
    """Arena-Hard judging as arena-hard-auto does it, by each judge: its prompt (the judge answers
    the question itself first), 5-level verdicts, two games (baseline as A, then the model as A).

    A judgment without exactly one verdict label counts as no battle (arena-hard-auto asks the judge
    once more to finish; here it is an abstention, counted in ``abstain_rate``).
    """

    pools: dict[str, ModelPool]  # judge name -> pool
    sampling: SamplingConfig

    def __call__(self, states: list[dict]) -> None:
        live = [s for s in states if s["arena_answers"] and not s["error"]]
        submitted = []
        room = self.sampling.max_new_tokens
        for judge, pool in self.pools.items():
            games, conversations = [], []
            for state, game in [(s, game) for s in live for game in (1, 2)]:
                conversation = fit_prompt(pool, state, _arena_game(state, game), room)
                if conversation is not None:
                    games.append((state, game))
                    conversations.append(conversation)
            submitted.append(
                (judge, games, pool.submit("chat", conversations, _params(self.sampling)))
            )
        for judge, games, refs in submitted:
            for (state, game), completion in zip(
                games, self.pools[judge].collect(refs), strict=True
            ):
                if completion.output is None:
                    mark_failed(state, f"judge {judge} failed: {completion.error}")
                    continue
                text = completion.output[0].text
                verdict = parse_arena_hard_verdict(text)
                state["arena_verdicts"].append(
                    {"judge": judge, "game": game, "verdict": verdict, "raw": text}
                )


def _arena_game(state: dict, game: int) -> Prompt:
    """One game's judge prompt; the two answers are its parts, cut evenly to fit a window."""
    model, baseline = state["arena_answers"]
    first, second = (baseline, model) if game == 1 else (model, baseline)
    return Prompt(partial(_arena_prompt, state["turns"][-1]), (first, second))


def _arena_prompt(question: str, answers: list[str]) -> list[dict]:
    return render_arena_hard_judge_prompt(question, answers[0], answers[1])


_MODEL_SCORE = {"model_a": 0.0, "model_b": 1.0, "tie": 0.5}  # battles are (baseline, model, winner)


def arena_battles(verdicts: list[dict], model: str, baseline: str) -> list[tuple[str, str, str]]:
    """A question's battles: per judge, its two games' verdicts with arena-hard-auto's weights."""
    by_judge: dict[str, dict[int, str | None]] = {}
    for v in verdicts:
        by_judge.setdefault(v["judge"], {})[v["game"]] = v["verdict"]
    return [
        battle
        for games in by_judge.values()
        for battle in battles_from_verdicts(model, baseline, games.get(1), games.get(2))
    ]


def _arena_score(verdicts: list[dict]) -> float | None:
    """The model's mean win score over a question's decided games (strength not weighted)."""
    scores = []
    for verdict in verdicts:
        games = (verdict["verdict"], None) if verdict["game"] == 1 else (None, verdict["verdict"])
        battles = battles_from_verdicts("model", "baseline", *games)
        if battles:
            scores.append(_MODEL_SCORE[battles[0][2]])
    return sum(scores) / len(scores) if scores else None


def _arena_stats(verdicts: list[dict]) -> dict:
    """Judgments, abstentions, and judges whose two games disagree on who won (position bias)."""
    per_judge: dict[str, list[float]] = {}
    for verdict in verdicts:
        score = _arena_score([verdict])
        if score is not None:
            per_judge.setdefault(verdict["judge"], []).append(score)
    flips = sum(1 for s in per_judge.values() if len(s) == 2 and (s[0] - 0.5) * (s[1] - 0.5) < 0)
    return {
        "judgments": len(verdicts),
        "abstains": sum(v["verdict"] is None for v in verdicts),
        "position_flips": flips,
        "pairs": len({v["judge"] for v in verdicts}),
    }


@dataclass(frozen=True)
class JudgedOnly:
    """A judging step over the batch's judged questions only: verified ones are left alone."""

    step: Callable[[list[dict]], None]

    def __call__(self, states: list[dict]) -> None:
        judged = [s for s in states if not s["verified"]]
        if judged:
            self.step(judged)


def verify_answers(verifier: Verifier, turns: list[str], answers: list[str]) -> bool | None:
    """The verifier's verdict on the model's last answer, with the conversation that led to it;
    None when it cannot check the answer."""
    last = len(turns) - 1
    verdict = verifier(answer_conversation(turns, answers, last), answers[last])
    return None if verdict is None else bool(verdict)


def _grade_request(state: dict, turn: int) -> Prompt:
    """The grading prompt of one turn; the model's answers are its parts, cut evenly to fit."""
    render = partial(_grade_prompt, state["turns"], turn, state["category"], state["reference"])
    return Prompt(render, tuple(state["model_answers"]))


def _grade_prompt(
    turns: list[str], turn: int, category: str, reference: list[str] | None, answers: list[str]
) -> list[dict]:
    return render_grade_prompt(turns, answers, turn, category, reference)


@dataclass(frozen=True)
class GradeStep:
    """MT-Bench single grading (FastChat's prompts): the grader rates each answer turn 1 to 10."""

    pool: ModelPool
    mode: str  # "text": parse "Rating: [[N]]"; "logprob": expected grade
    sampling: SamplingConfig

    def __call__(self, states: list[dict]) -> None:
        room = self.sampling.max_new_tokens if self.mode == "text" else LOGPROB_REPLY_TOKENS
        items, conversations = [], []
        for state, turn in [(s, t) for s in states if s["graded"] for t in range(len(s["turns"]))]:
            conversation = fit_prompt(self.pool, state, _grade_request(state, turn), room)
            if conversation is not None:
                items.append((state, turn))
                conversations.append(conversation)
        if self.mode == "logprob":
            first = self.pool.submit("choice_logprobs", conversations, GRADE_PREFIX, GRADES)
            split = self.pool.submit(
                "choice_logprobs", conversations, GRADE_PREFIX + "1", ["0", "]"]
            )
            pairs = zip(self.pool.collect(first), self.pool.collect(split), strict=True)
            for (state, turn), (grade, ten) in zip(items, pairs, strict=True):
                if grade.output is None or ten.output is None:
                    mark_failed(state, f"grading failed: {grade.error or ten.error}")
                    continue
                score = expected_grade(grade.output, ten.output)
                state["grades"].append(_grade(state, turn, score, None))
            return
        completions = self.pool.chat(conversations, _params(self.sampling))
        for (state, turn), completion in zip(items, completions, strict=True):
            if completion.output is None:  # a failed call is not an ungradable answer
                mark_failed(state, f"grading failed: {completion.error}")
                continue
            text = completion.output[0].text
            state["grades"].append(_grade(state, turn, parse_rating(text), text))


def _length_stats(state: dict) -> dict:
    """Answers cut at max_new_tokens per side, and prompts cut to fit a context window."""
    cut = {f"truncated_{side}": count for side, count in state["truncated"].items()}
    return cut | {"shortened_prompts": state["counts"]["shortened_prompts"]}


def _grade(state: dict, turn: int, score: float | None, raw: str | None) -> dict:
    return {"turn": turn + 1, "category": state["category"], "score": score, "raw": raw}


# State keys written as columns of the stage's rows, with the score and judgment stats.
_STATE_COLUMNS = (
    "row_id", "benchmark", "question_id", "category", "turns", "model_answers",
    "baseline_answers", "criteria", "grades", "arena_verdicts",
)  # fmt: skip


def evaluate(
    config: MoaaConfig, run_dir: str | Path, stage_name: str = "evaluate", fresh: bool = False
) -> dict:
    """Answer, judge and grade every benchmark question, and write ``results.json``; a rerun resumes.

    Args:
        config: the run's config; needs an ``evaluate`` section.
        run_dir: the run directory.
        stage_name: the stage's folder and manifest entry.
        fresh: if the evaluated model, judges, config or benchmark files changed, move the earlier
            results aside and start over (otherwise such a rerun is refused).

    Returns:
        The runner's summary plus ``benchmarks``: ``{name: results}``, as in ``results.json``.
    """
    if config.evaluate is None:
        raise ValueError("config has no 'evaluate' section")
    stage = EvaluationStage(config, config.evaluate, RunDir(run_dir), stage_name)
    return run_row_stage(stage, config, fresh)


class EvaluationStage:
    """Answering, judging and grading of every benchmark question that has a baseline, and
    answering and verifying of every verified one."""

    def __init__(self, config: MoaaConfig, ev: EvaluateConfig, run: RunDir, name: str):
        self.config, self.ev, self.name = config, ev, name
        self.stage = run.stage(name)
        self.audit = StageDir(self.stage.path / "judgments")
        self.skipped: Counter = Counter()
        self.wanted: set[str] = set()
        verified = any(b.verified for b in ev.benchmarks)
        self.verifier: Verifier | None = (
            load_callable(config.verifier) if verified and config.verifier else None
        )

    def fingerprint(self) -> dict:
        """The evaluate section, every model it names, the benchmark files' content, and the
        verifier where a benchmark is verified."""
        ev = self.ev
        judges = ev.judging.models() if ev.judging else []
        roles = [ev.model, ev.baseline_model, *judges, _grader(ev)]
        files = {
            f"benchmarks.{b.key()}.{key}": fingerprint_input(InputConfig(path=path))
            for b in ev.benchmarks
            for key, path in (
                ("questions", b.path),
                ("references", b.reference_answers_path),
                ("baseline_answers", b.baseline_answers_path),
            )
            if path is not None
        }
        verifier = {"verifier": self.config.verifier} if self.verifier is not None else {}
        return {
            **config_identity(ev, "evaluate"),
            **models_identity(self.config.models, [r for r in roles if r is not None]),
            **files,
            **verifier,
        }

    def load(self) -> tuple[list[dict], list[Reject]]:
        """Question states; questions without a baseline answer are skipped and counted.

        A graded question whose category FastChat grades against a reference (math, reasoning,
        coding) and that has none is a reject: a grade without it would not be MT-Bench's.
        """
        states, self.skipped = _question_states(self.ev)
        rejects = [
            Reject(
                s["source"],
                -1,
                f"category {s['category']!r} is graded against a reference answer and the "
                "question has none; set the benchmark's reference_answers_path",
                s["row_id"],
            )
            for s in states
            if s["graded"] and needs_reference(s["category"]) and not s["reference"]
        ]
        refused = {r.row_id for r in rejects}
        states = [s for s in states if s["row_id"] not in refused]
        self.wanted = {s["row_id"] for s in states}
        return states, rejects

    def done_ids(self) -> set[str]:
        """Questions already judged."""
        return self.stage.done_ids()

    def batches(self, todo: list[dict], pools: PoolSet) -> Iterator[list[dict]]:
        """Answered, judged and graded questions, batch by batch."""
        steps = _steps(self.ev, pools.start(_models(self.ev, todo)), todo)
        return stream_states(todo, steps, self.ev.batch_size)

    def write(self, batch: list[dict]) -> BatchOutcome:
        """Write judged and verified questions and the judgments; failed ones become rejects."""
        return _write_batch(batch, self.ev, self.verifier, self.stage, self.audit)

    def summarize(self) -> dict:
        """Results per benchmark over every question written; also saved as ``results.json``."""
        ev = self.ev
        table = self.stage.read()
        rows = [
            r
            for r in (table.to_pylist() if table is not None else [])
            if r["row_id"] in self.wanted
        ]
        results = {
            bench.key(): verified_results([r for r in rows if r["benchmark"] == bench.key()])
            if bench.verified
            else benchmark_results(
                [r for r in rows if r["benchmark"] == bench.key()],
                ev.model,
                baseline_name(ev, bench),
                self.skipped[bench.key()],
                ev.bootstrap_rounds,
                seed=ev.sampling.seed,
                style_control=bench.style_control,
                instruction_difficulty=None
                if bench.instruction_difficulty_path is None
                else load_instruction_difficulty(bench.instruction_difficulty_path),
            )
            for bench in ev.benchmarks
        }
        accuracy = {b.key(): results[b.key()]["accuracy"] for b in ev.benchmarks if b.verified}
        shared = shared_judges(self.config)
        if shared:
            logger.warning(
                "evaluation judges %s also labelled the training pairs: their win rates may "
                "favour the model (self-preference); results.json records self_judged: true",
                shared,
            )
        summary = {
            "self_judged": bool(shared),
            "shared_judges": shared,
            "accuracy": accuracy,
            "benchmarks": results,
        }
        (self.stage.path / "results.json").write_text(json.dumps(summary, indent=2))
        earlier = earlier_evaluations(self.stage.path.parent)
        label = "final" if earlier else ev.model
        report = write_report(self.stage.path, [*earlier, (label, summary)])
        return {**summary, "report": str(report)}


def earlier_evaluations(run_root: Path) -> list[tuple[str, dict]]:
    """Results of the rounds ``moaa run`` evaluated before the final model (``evaluate.every_round``).

    ``round-0/evaluate`` holds the SFT model's, ``round-<r>/evaluate`` DPO round r's.
    """
    found = []
    for path in run_root.glob("round-*/evaluate/results.json"):
        suffix = path.parent.parent.name.removeprefix("round-")
        if not suffix.isdigit():
            continue
        number = int(suffix)
        found.append((number, "SFT" if number == 0 else f"DPO round {number}", path))
    return [(label, json.loads(path.read_text())) for _, label, path in sorted(found)]


def shared_judges(config: MoaaConfig) -> list[str]:
    """Evaluation judges (and the grader) that also labelled the training pairs.

    A judge that ranked the DPO pairs prefers answers like the ones it taught the model to write
    (self-preference), so its win rates on that model are not independent evidence.
    """
    prefs, ev = config.preferences, config.evaluate
    if prefs is None or ev is None:
        return []
    labellers = set(prefs.judging.models() if prefs.judging else [])
    if prefs.reward_model is not None:
        labellers.add(prefs.reward_model)
    evaluators = ev.judging.models() if ev.judging else []
    grader = _grader(ev)
    if grader is not None and any(_graded(bench) for bench in ev.benchmarks):
        evaluators.append(grader)
    return sorted(labellers.intersection(evaluators))


def _format(bench: BenchmarkConfig) -> str:
    """The benchmark's format, as configured or detected from its file."""
    return detect_benchmark_format(Path(bench.path)) if bench.format == "auto" else bench.format


def _graded(bench: BenchmarkConfig) -> bool:
    """Whether the grader rates a benchmark's answers (MT-Bench)."""
    return _format(bench) == "mt_bench"


def question_row_id(benchmark: str, question_id: str) -> str:
    """A stable id for a benchmark question."""
    return hashlib.sha256(json.dumps([benchmark, question_id]).encode()).hexdigest()[:24]


def baseline_name(ev: EvaluateConfig, bench: BenchmarkConfig) -> str:
    """The anchor of a benchmark's scores: the baseline model, or the answers file's stem."""
    if ev.baseline_of(bench) == "model":
        return str(ev.baseline_model)
    return f"{Path(bench.baseline_answers_path or bench.path).stem}-answers"


def _question_states(ev: EvaluateConfig) -> tuple[list[dict], Counter]:
    """States of every question that has a baseline, and per benchmark how many have none."""
    states: list[dict] = []
    skipped: Counter = Counter()
    for bench in ev.benchmarks:
        questions = load_eval_questions(
            bench.path, bench.format, bench.reference_answers_path, bench.baseline_answers_path
        )
        name = _format(bench)  # detected from the file once, not per question
        graded = name == "mt_bench"
        arena = bench.judge == "arena_hard" or (bench.judge == "auto" and name == "arena_hard")
        for question in questions[: bench.limit]:
            baseline = None
            if ev.baseline_of(bench) == "answers":
                baseline = question.baseline_answer
                if baseline is None or len(baseline) < len(question.turns):
                    skipped[bench.key()] += 1
                    continue
            row_id = question_row_id(bench.key(), question.question_id)
            source = f"{bench.key()}#{question.question_id}"
            temperature = None
            if graded and bench.category_temperatures:
                temperature = answer_temperature(question.category)
            state = new_question_state(
                row_id, question, source, baseline, graded, temperature, arena, bench.verified
            )
            state["benchmark"] = bench.key()
            states.append(state)
    return states, skipped


def _grader(ev: EvaluateConfig) -> str | None:
    """The MT-Bench grader: ``grader``, else the first judge; None with neither."""
    return ev.grader or (ev.judging.judges[0] if ev.judging else None)


def _baseline_model_answers(todo: list[dict]) -> bool:
    """Whether the baseline model answers a question to do: a judged one without file answers."""
    return any(not s["verified"] and not s["baseline_answers"] for s in todo)


def _models(ev: EvaluateConfig, todo: list[dict]) -> list[str]:
    """Distinct models the questions to do need: a model in several roles gets one pool."""
    roles = [ev.model]
    if any(not s["verified"] for s in todo):
        assert ev.judging is not None  # checked by the config schema
        roles += ev.judging.models()
    if _baseline_model_answers(todo):
        roles.append(str(ev.baseline_model))
    if any(s["graded"] for s in todo):
        roles.append(str(_grader(ev)))
    return list(dict.fromkeys(roles))


def _steps(ev: EvaluateConfig, pools: dict, todo: list[dict]) -> list[StreamStep]:
    answerers = {"model_answers": pools[ev.model]}
    if _baseline_model_answers(todo):
        answerers["baseline_answers"] = pools[str(ev.baseline_model)]
    num_turns = max(len(s["turns"]) for s in todo)
    steps = [
        StreamStep(
            AnswerStep(answerers, turn, ev.sampling),
            f"answer_turn_{turn + 1}",
            list(answerers.values()),
        )
        for turn in range(num_turns)
    ]
    if all(s["verified"] for s in todo):
        return steps
    assert ev.judging is not None  # checked by the config schema
    steps += [  # one pair: (model, baseline)
        StreamStep(JudgedOnly(step.apply), step.name, step.pools)
        for step in judging_steps(pools, ev.judging, "round_robin")
    ]
    if any(s["arena_hard"] for s in todo):
        judges = {j: pools[j] for j in dict.fromkeys(ev.judging.judges)}
        arena = ArenaHardJudgeStep(judges, ev.judging.sampling)
        steps.append(StreamStep(arena, "arena_hard_judges", list(judges.values())))
    if any(s["graded"] for s in todo):
        grader = pools[str(_grader(ev))]
        grade = GradeStep(grader, ev.grading_mode, ev.judging.sampling)
        steps.append(StreamStep(grade, "grade", [grader]))
    return steps


def _write_batch(
    batch: list[dict],
    ev: EvaluateConfig,
    verifier: Verifier | None,
    stage: StageDir,
    audit: StageDir,
) -> BatchOutcome:
    rules = verdict_rules(ev.judging)
    rows, judgments, rejects = [], [], []
    for state in batch:
        if state["error"]:  # an engine failure: retried by the next run
            failed = bool(state.get("failed"))
            rejects.append(Reject(state["source"], -1, state["error"], state["row_id"], failed))
            continue
        correct = None
        if state["verified"]:
            assert verifier is not None  # checked by the config schema
            correct = verify_answers(verifier, state["turns"], state["model_answers"])
            score, stats = None, {}
        elif state["arena_hard"]:
            score, stats = (
                _arena_score(state["arena_verdicts"]),
                _arena_stats(state["arena_verdicts"]),
            )
        else:
            [comparison] = pair_comparisons(state, [PAIR], rules)
            score, stats = comparison.score_i, judgment_stats(state, [PAIR], rules)
        rows.append(
            {
                **{key: state[key] for key in _STATE_COLUMNS},
                "score": score,
                "stats": json.dumps(stats | _length_stats(state)),
                "correct": correct,
            }
        )
        judgments += [audit_row(state, j) for j in state["judgments"]]
    audit.write_shard(judgments, judgment_schema())
    stage.write_shard(rows, question_schema())
    return BatchOutcome(len(rows), rejects)


def question_schema():
    """Arrow schema of the stage's rows: one question with both sides' answers (a verified one:
    the model's alone) and its score, grades or verifier verdict (``correct``)."""
    import pyarrow as pa

    strings = pa.list_(pa.string())
    grade = pa.struct(
        [
            ("turn", pa.int32()),
            ("category", pa.string()),
            ("score", pa.float64()),
            ("raw", pa.string()),
        ]
    )
    return pa.schema(
        [
            ("row_id", pa.string()),
            ("benchmark", pa.string()),
            ("question_id", pa.string()),
            ("category", pa.string()),
            ("turns", strings),
            ("model_answers", strings),
            ("baseline_answers", strings),
            ("criteria", strings),
            ("grades", pa.list_(grade)),
            (
                "arena_verdicts",
                pa.list_(
                    pa.struct(
                        [
                            ("judge", pa.string()),
                            ("game", pa.int32()),
                            ("verdict", pa.string()),
                            ("raw", pa.string()),
                        ]
                    )
                ),
            ),
            ("score", pa.float64()),
            ("stats", pa.string()),
            ("correct", pa.bool_()),
        ]
    )


def verified_results(rows: list[dict]) -> dict:
    """One verified benchmark's exact-match accuracy from its answered questions.

    Args:
        rows: one per answered question, with ``correct``: the verifier's True or False, or None
            when it could not check the answer.

    Returns:
        ``accuracy`` (correct / verifiable, rounded to 4 places; None when nothing was
        verifiable), ``correct``, ``verifiable``, ``total`` (questions answered) and ``format``:
        ``"verified"``.
    """
    verdicts = [row["correct"] for row in rows]
    verifiable = sum(v is not None for v in verdicts)
    correct = sum(v is True for v in verdicts)
    return {
        "accuracy": share(correct, verifiable),
        "correct": correct,
        "verifiable": verifiable,
        "total": len(rows),
        "format": "verified",
    }


def benchmark_results(
    rows: list[dict],
    model: str,
    baseline: str,
    num_skipped: int,
    bootstrap_rounds: int,
    seed: int = 0,
    style_control: bool = False,
    instruction_difficulty: dict[str, float] | None = None,
) -> dict:
    """One benchmark's numbers from its judged questions.

    Args:
        rows: one per judged question: ``score`` (the model's win score against the baseline, both
            orders combined; None when the judges abstained), ``model_answers`` and
            ``baseline_answers`` (per turn; the last one was judged), ``grades`` (``{"turn",
            "score"}`` per graded turn) and ``stats`` (JSON of :func:`judgment_stats`).
        model: the evaluated model's name.
        baseline: the baseline's name, the Bradley-Terry anchor (score 50).
        num_skipped: questions skipped for want of a baseline answer.
        bootstrap_rounds: resamples for the Bradley-Terry interval.
        seed: seed of the resampling (Arena-Hard rows: arena-hard-auto's 42).
        style_control: Arena-Hard rows: also the style-controlled score.
        instruction_difficulty: AlpacaEval's difficulty by ``question_id`` (its position in the
            805 instructions) for the LC win rate; a question without one counts as 0.

    Returns:
        Counts and win rate (:func:`win_tie_loss`), ``lc_win_rate`` (answer lengths in characters),
        ``bt`` (``{"score", "lower", "upper"}`` or None when nothing was decided; for rows judged
        as arena-hard-auto judges, :func:`arena_hard_results`), ``mt_bench``
        (:func:`mt_bench_summary`, or None when nothing was graded), abstain and position-bias
        rates, questions judged in one A/B order only (``single_order_pairs``: under the default
        order policy they abstain) and orders the judges' mean decided for an abstaining aggregator
        judge (``aggregator_fallbacks``), and answers cut at ``max_new_tokens`` per side
        (``truncated_answers``: judged as written, as the benchmarks do) and prompts whose parts
        were cut to fit a context window (``shortened_prompts``). NaN is written as None.
    """
    scores = [row["score"] for row in rows]
    result: dict = {"baseline": baseline, "judged": len(rows), "skipped_no_baseline": num_skipped}
    result.update(win_tie_loss(scores))
    result["lc_win_rate"] = length_controlled_win_rate(
        scores,
        [len(row["model_answers"][-1]) for row in rows],
        [len(row["baseline_answers"][-1]) for row in rows],
        instruction_difficulty=None
        if instruction_difficulty is None
        else [instruction_difficulty.get(row["question_id"], 0.0) for row in rows],
    )
    battles = [(model, baseline, score) for score in scores if score is not None]
    result["bt"] = None
    if any(row.get("arena_verdicts") for row in rows):
        result["bt"] = arena_hard_results(rows, model, baseline, bootstrap_rounds, style_control)
    elif battles:
        point = bradley_terry_battles(battles, baseline)[model]
        _, lower, upper = bootstrap_ci(battles, baseline, bootstrap_rounds, seed)[model]
        result["bt"] = {"score": point, "lower": lower, "upper": upper}
    grades = [grade for row in rows for grade in row["grades"]]
    result["mt_bench"] = mt_bench_summary(grades) if grades else None
    totals: Counter = Counter()
    for row in rows:
        totals.update(json.loads(row["stats"]))
    result["abstain_rate"] = share(totals["abstains"], totals["judgments"])
    result["position_bias_rate"] = share(totals["position_flips"], totals["pairs"])
    result["single_order_pairs"] = totals["single_order_pairs"]
    result["aggregator_fallbacks"] = totals["aggregator_fallbacks"]
    result["truncated_answers"] = {
        "model": totals["truncated_model_answers"],
        "baseline": totals["truncated_baseline_answers"],
    }
    result["shortened_prompts"] = totals["shortened_prompts"]
    return _json_safe(result)


ARENA_HARD_SEED = 42  # arena-hard-auto seeds its bootstrap with 42


def arena_hard_results(
    rows: list[dict], model: str, baseline: str, bootstrap_rounds: int, style_control: bool
) -> dict | None:
    """The model's Arena-Hard score against the baseline with its 95% interval, as arena-hard-auto.

    Style control adds each battle's style features (answer length in words, as a stand-in for
    arena-hard-auto's tiktoken count, and markdown header, list and bold counts) of the baseline's
    and the model's answers, fitted jointly: ``style_controlled`` is the score with style held equal.

    Returns:
        ``{"score", "lower", "upper", "method", "style_controlled"}``, or None with no decided battle.
    """
    battles, styles = [], []
    for row in rows:
        answers = (row["baseline_answers"][-1], row["model_answers"][-1])
        style = [answer_style_counts(a, len(a.split())) for a in answers]
        found = arena_battles(row.get("arena_verdicts") or [], model, baseline)
        battles += found
        styles += [style] * len(found)
    if not battles:
        return None
    plain = arena_hard_scores(battles, baseline, bootstrap_rounds, ARENA_HARD_SEED)[model]
    controlled = None
    varying = _varying_features(styles) if style_control else []
    if varying:  # a feature no battle varies in (e.g. no markdown anywhere) cannot be fitted
        features = [[[side[k] for k in varying] for side in style] for style in styles]
        controlled = arena_hard_scores(
            battles, baseline, bootstrap_rounds, ARENA_HARD_SEED, style_features=features
        )[model]
    return {**plain, "method": "arena-hard-auto v0.1", "style_controlled": controlled}


def _varying_features(styles: list) -> list[int]:
    """Indices of the style features whose normalised difference varies across battles."""
    diffs = [[(a - b) / (a + b + 1) for a, b in zip(*style, strict=True)] for style in styles]
    return [k for k in range(len(diffs[0])) if len({d[k] for d in diffs}) > 1]


def _json_safe(value):
    """NaN as None and keys as strings, so results read the same from memory and from JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
