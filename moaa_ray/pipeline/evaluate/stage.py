"""The evaluation stage: the model against a baseline on benchmark questions, judged by the ensemble.

Per question the model answers every turn (its own earlier answers in context); a baseline model does
the same, or the benchmark file's baseline answers stand in (questions without one are skipped and
counted). The judges compare the final-turn answers in both orders, the aggregator judge deciding if
set, and the grader rates MT-Bench answers 1-10 per turn. Reported as MoAA (arXiv 2505.03059) does:
win/tie/loss, AlpacaEval-2 length-controlled win rate, Arena-Hard Bradley-Terry score with a bootstrap
interval, MT-Bench grades. On a ``verified`` benchmark only the model answers and nobody judges: the
config's verifier checks each final answer on the driver; the benchmark reports exact-match accuracy.
On a graded-only MT-Bench benchmark (``baseline: none``) only the model answers and only the grader
rates it: FastChat's single grading, with no baseline and no win rates.

Writes, under ``<run_dir>/<stage>/``: ``part-*.parquet`` (one row per question: answers, score, grades),
``judgments/`` (the audit table of every judgment), ``rejects.jsonl`` and ``results.json``. A rerun
answers and judges only questions not yet written.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from moaa_ray.callables import load_callable
from moaa_ray.config import (
    BenchmarkConfig,
    EvaluateConfig,
    GradingSamplingConfig,
    InputConfig,
    JudgingConfig,
    MoaaConfig,
    SamplingConfig,
)
from moaa_ray.core.eval_question import (
    EvalQuestion,
    Side,
    is_graded,
    is_judged,
    judge_of,
)
from moaa_ray.core.mt_bench import needs_reference
from moaa_ray.core.verification import Verifier
from moaa_ray.core.winrates import load_gamed_baseline
from moaa_ray.pipeline.cluster_pools import cluster_pools
from moaa_ray.pipeline.evaluate.questions import baseline_name, is_graded_benchmark, question_states
from moaa_ray.pipeline.evaluate.report import (
    Evaluation,
    earlier_evaluations,
    evaluated_models,
    write_report,
)
from moaa_ray.pipeline.evaluate.results import benchmark_results, is_scored, verified_results
from moaa_ray.pipeline.evaluate.rows import QuestionRow, read_question_rows, write_batch
from moaa_ray.pipeline.evaluate.steps import (
    AlpacaEvalJudgeStep,
    AnswerStep,
    ArenaHardJudgeStep,
    GradeStep,
    JudgedOnly,
)
from moaa_ray.pipeline.inputs import fingerprint_input
from moaa_ray.pipeline.judging import judging_steps
from moaa_ray.pipeline.streaming import StreamStep, stream_states
from moaa_ray.pools.model_pool import ModelPool
from moaa_ray.pools.pool_set import PoolSet
from moaa_ray.records import Reject
from moaa_ray.stages.fingerprint import config_identity, models_identity
from moaa_ray.stages.layout import EVALUATE
from moaa_ray.stages.rundir import RunDir, StageDir
from moaa_ray.stages.runner import BatchOutcome, run_row_stage

logger = logging.getLogger(__package__)  # log lines name the evaluation package


def evaluate(
    config: MoaaConfig, run_dir: str | Path, stage_name: str = EVALUATE, fresh: bool = False
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
    return run_row_stage(stage, config, fresh, start_pools=cluster_pools)


class EvaluationStage:
    """Answering, judging and grading of every benchmark question that has a baseline, answering
    and grading of every graded-only one, and answering and verifying of every verified one."""

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

    def load(self) -> tuple[list[EvalQuestion], list[Reject]]:
        """Question states; questions without a baseline answer are skipped
        and counted.

        A graded question whose category FastChat grades against a reference (math, reasoning,
        coding) and that has none is a reject: a grade without it would not be MT-Bench's.
        """
        states, self.skipped = question_states(self.ev)
        rejects = [
            Reject(
                s["source"],
                -1,
                f"category {s['category']!r} is graded against a reference answer and the "
                "question has none; set the benchmark's reference_answers_path",
                s["row_id"],
            )
            for s in states
            if is_graded(s) and needs_reference(s["category"]) and not s["reference"]
        ]
        refused = {r.row_id for r in rejects}
        states = [s for s in states if s["row_id"] not in refused]
        self.wanted = {s["row_id"] for s in states}
        return states, rejects

    def done_ids(self) -> set[str]:
        """Questions already judged."""
        return self.stage.done_ids()

    def batches(self, todo: list[EvalQuestion], pools: PoolSet) -> Iterator[list[EvalQuestion]]:
        """Answered, judged and graded questions, batch by batch."""
        steps = _steps(self.ev, pools.launch(_models(self.ev, todo)), todo)
        return stream_states(todo, steps, self.ev.batch_size, starting=pools.wait)

    def write(self, batch: list[EvalQuestion]) -> BatchOutcome:
        """Write judged and verified questions and the judgments; failed ones become rejects."""
        return write_batch(batch, self.ev, self.verifier, self.stage, self.audit)

    def summarize(self) -> dict:
        """Results per benchmark over every question written; also saved as ``results.json``."""
        ev = self.ev
        rows = [r for r in read_question_rows(self.stage) if r["row_id"] in self.wanted]
        root = self.stage.path.parent
        earlier = earlier_evaluations(root, evaluated_models(self.config))
        label = "final" if earlier else ev.model
        pools = style_control_pools(root, earlier, self.config, rows)
        results = {
            bench.key(): verified_results(
                [r for r in rows if r["benchmark"] == bench.key()], ev.num_samples
            )
            if bench.verified
            else benchmark_results(
                [r for r in rows if r["benchmark"] == bench.key()],
                label,
                baseline_name(ev, bench),
                self.skipped[bench.key()],
                ev.bootstrap_rounds,
                seed=ev.sampling.seed,
                style_control=bench.style_control,
                gamed_baseline=None
                if bench.gamed_baseline_path is None
                else load_gamed_baseline(bench.gamed_baseline_path),
                style_pool=pools.get(bench.key()),
            )
            for bench in ev.benchmarks
        }
        unscored = Counter(
            _unscored_reason(ev, bench)
            for bench in ev.benchmarks
            for row in rows
            if row["benchmark"] == bench.key() and not is_scored(row)
        )
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
        evaluations = [*with_pooled_style_control(earlier, summary), (label, summary)]
        report = write_report(self.stage.path, evaluations)
        return {**summary, "report": str(report), "questions_unscored": dict(unscored)}

    def unused(self, summary: dict) -> dict[str, int]:
        """Questions written without a score, grade or verdict, by reason."""
        return dict(summary["questions_unscored"])


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
    if grader is not None and any(is_graded_benchmark(bench) for bench in ev.benchmarks):
        evaluators.append(grader)
    return sorted(labellers.intersection(evaluators))


def style_control_pools(
    root: Path, earlier: list[Evaluation], config: MoaaConfig, rows: list[QuestionRow]
) -> dict[str, dict[str, list[QuestionRow]]]:
    """Per style-controlled Arena-Hard benchmark, the run's earlier-evaluated models that share the
    evaluated model's style-control pool, with their rows.

    The leaderboard fits style control over every model its judge judged against the baseline; in
    a run those are the models :func:`evaluated_models` evaluates before the final one. A model
    joins the pool of a benchmark when its results name the same baseline and the same judges gave
    its verdicts as the evaluated model's.

    Args:
        root: the run directory, whose ``<folder>/evaluate/`` holds an earlier model's stage.
        earlier: the earlier models' results, by label (:func:`earlier_evaluations`).
        config: the run's config.
        rows: the evaluated model's rows.

    Returns:
        ``{benchmark: {label: rows}}``, in :func:`evaluated_models`'s order.
    """
    ev = config.evaluate
    assert ev is not None  # the stage runs only with an evaluate section
    benches = [b for b in ev.benchmarks if b.style_control and baseline_name(ev, b) is not None]
    pools: dict[str, dict[str, list[QuestionRow]]] = {b.key(): {} for b in benches}
    folders = dict(evaluated_models(config))
    for label, summary in earlier if benches else []:
        results = summary["benchmarks"]
        earlier_rows = read_question_rows(StageDir(root / folders[label] / EVALUATE))
        for bench in benches:
            key = bench.key()
            theirs = [r for r in earlier_rows if r["benchmark"] == key]
            ours = [r for r in rows if r["benchmark"] == key]
            same_baseline = results.get(key, {}).get("baseline") == baseline_name(ev, bench)
            if theirs and same_baseline and _arena_judges(theirs) == _arena_judges(ours):
                pools[key][label] = theirs
    return pools


def _arena_judges(rows: list[QuestionRow]) -> set[str]:
    """The judges whose Arena-Hard verdicts the rows hold."""
    return {v["judge"] for row in rows for v in row.get("arena_verdicts") or []}


def with_pooled_style_control(earlier: list[Evaluation], summary: dict) -> list[Evaluation]:
    """The earlier models' results with the style-controlled scores of the evaluated model's pool.

    Each earlier stage's ``results.json`` holds the fit over the pool it had; the report shows every
    model's score from the one joint fit of the latest evaluation (``summary``), as the
    leaderboard would show it.
    """
    updated = []
    for label, results in earlier:
        benchmarks = dict(results["benchmarks"])
        for key, result in summary["benchmarks"].items():
            pooled = (result.get("bt") or {}).get("style_controlled_by_model") or {}
            bt = (benchmarks.get(key) or {}).get("bt")
            if label in pooled and bt:
                pool = result["bt"]["style_control_pool"]
                controlled = {"style_controlled": pooled[label], "style_control_pool": pool}
                benchmarks[key] = {**benchmarks[key], "bt": bt | controlled}
        updated.append((label, {**results, "benchmarks": benchmarks}))
    return updated


def _unscored_reason(ev: EvaluateConfig, bench: BenchmarkConfig) -> str:
    """Why a question of ``bench`` has no result."""
    if bench.verified:
        return "the verifier could not check the answer"
    if baseline_name(ev, bench) is None:
        return "the grader gave no rating"
    return "the judges abstained"


def _grader(ev: EvaluateConfig) -> str | None:
    """The MT-Bench grader: ``grader``, else the first judge; None with neither."""
    return ev.grader or (ev.judging.judges[0] if ev.judging else None)


def _grading_sampling(ev: EvaluateConfig) -> SamplingConfig | GradingSamplingConfig:
    """The grader's ``grading_sampling``; without it, as the judges sample, and with no judges
    (graded-only benchmarks) as judges do by default."""
    if ev.grading_sampling is not None:
        return ev.grading_sampling
    return ev.judging.sampling if ev.judging else JudgingConfig.model_fields["sampling"].default


def _baseline_model_answers(todo: list[EvalQuestion]) -> bool:
    """Whether the baseline model answers a question to do: a judged one without file answers."""
    return any(is_judged(s) and not s["baseline_answers"] for s in todo)


def _models(ev: EvaluateConfig, todo: list[EvalQuestion]) -> list[str]:
    """Distinct models the questions to do need: a model in several roles gets one pool."""
    roles = [ev.model]
    if any(is_judged(s) for s in todo):
        assert ev.judging is not None  # checked by the config schema
        roles += ev.judging.models()
    if _baseline_model_answers(todo):
        roles.append(str(ev.baseline_model))
    if any(is_graded(s) for s in todo):
        roles.append(str(_grader(ev)))
    return list(dict.fromkeys(roles))


def _steps(ev: EvaluateConfig, pools: dict, todo: list[EvalQuestion]) -> list[StreamStep]:
    answerers: dict[Side, ModelPool] = {"model_answers": pools[ev.model]}
    if _baseline_model_answers(todo):
        answerers["baseline_answers"] = pools[str(ev.baseline_model)]
    num_turns = max(len(s["turns"]) for s in todo)
    steps = [
        StreamStep(
            AnswerStep(answerers, turn, ev.sampling, ev.num_samples),
            f"answer_turn_{turn + 1}",
            list(answerers.values()),
        )
        for turn in range(num_turns)
    ]
    if any(is_judged(s) for s in todo):
        steps += _pairwise_steps(ev, pools, todo)
    if any(is_graded(s) for s in todo):
        grader = pools[str(_grader(ev))]
        grade = GradeStep(grader, ev.grading_mode, _grading_sampling(ev))
        steps.append(StreamStep(grade, "grade", [grader]))
    return steps


def _pairwise_steps(ev: EvaluateConfig, pools: dict, todo: list[EvalQuestion]) -> list[StreamStep]:
    """The judges' steps on each judged question's one pair (model, baseline): the ensemble's,
    then arena-hard-auto's and AlpacaEval 2's where a question is judged that way."""
    assert ev.judging is not None  # checked by the config schema
    steps = [
        StreamStep(JudgedOnly(step.apply), step.name, step.pools)
        for step in judging_steps(pools, ev.judging, "round_robin")
    ]
    judges = {j: pools[j] for j in dict.fromkeys(ev.judging.judges)}
    if any(judge_of(s) == "arena_hard" for s in todo):
        arena = ArenaHardJudgeStep(judges, ev.judging.sampling)
        steps.append(StreamStep(arena, "arena_hard_judges", list(judges.values())))
    if any(judge_of(s) == "alpaca_eval" for s in todo):
        alpaca = AlpacaEvalJudgeStep(judges)
        steps.append(StreamStep(alpaca, "alpaca_eval_judges", list(judges.values())))
    return steps
