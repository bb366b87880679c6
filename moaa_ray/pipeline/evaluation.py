"""The evaluation stage: the model against a baseline on benchmark questions, judged by the ensemble.

Per question the model answers every turn (its own earlier answers in context); a baseline model does
the same, or the benchmark file's baseline answers stand in (questions without one are skipped and
counted). The judges compare the final-turn answers in both orders, the aggregator judge deciding if
set, and the grader rates MT-Bench answers 1-10 per turn. Reported as MoAA (arXiv 2505.03059) does:
win/tie/loss, AlpacaEval-2 length-controlled win rate, Arena-Hard Bradley-Terry score with a bootstrap
interval, MT-Bench grades.

Writes, under ``<run_dir>/<stage>/``: ``part-*.parquet`` (one row per question: answers, score, grades),
``judgments/`` (the audit table of every judgment), ``rejects.jsonl`` and ``results.json``. A rerun
answers and judges only questions not yet written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from moaa_ray.config import BenchmarkConfig, EvaluateConfig, InputConfig, MoaaConfig
from moaa_ray.core.tournament import AGGREGATOR, judgment_stats, pair_comparisons
from moaa_ray.core.winrates import (
    bootstrap_ci,
    bradley_terry_battles,
    length_controlled_win_rate,
    mt_bench_summary,
    win_tie_loss,
)
from moaa_ray.engines.pools import PoolSet
from moaa_ray.eval.benchmarks import detect_format, load_eval_questions
from moaa_ray.pipeline.evaluation_steps import (
    PAIR,
    AnswerStep,
    GradeStep,
    new_question_state,
)
from moaa_ray.pipeline.inputs import fingerprint_input
from moaa_ray.pipeline.preference_stage import audit_row, judging_steps
from moaa_ray.pipeline.streaming import StreamStep, stream_states
from moaa_ray.records import Reject, judgment_schema
from moaa_ray.runs.fingerprint import config_identity, models_identity
from moaa_ray.runs.rundir import RunDir, StageDir
from moaa_ray.runs.runner import BatchOutcome, run_row_stage

logger = logging.getLogger(__name__)

# State keys written as columns of the stage's rows, with the score and judgment stats.
_STATE_COLUMNS = (
    "row_id", "benchmark", "question_id", "category", "turns", "model_answers",
    "baseline_answers", "criteria", "grades",
)  # fmt: skip


def evaluate(
    config: MoaaConfig, run_dir: str | Path, stage_name: str = "eval", fresh: bool = False
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
    """Answering, judging and grading of every benchmark question that has a baseline."""

    def __init__(self, config: MoaaConfig, ev: EvaluateConfig, run: RunDir, name: str):
        self.config, self.ev, self.name = config, ev, name
        self.stage = run.stage(name)
        self.audit = StageDir(self.stage.path / "judgments")
        self.skipped: Counter = Counter()
        self.wanted: set[str] = set()

    def fingerprint(self) -> dict:
        """The evaluate section, every model it names, and the benchmark files' content."""
        ev = self.ev
        roles = [ev.model, ev.baseline_model, *ev.judging.models(), _grader(ev)]
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
        return {
            **config_identity(ev, "evaluate"),
            **models_identity(self.config.models, [r for r in roles if r is not None]),
            **files,
        }

    def load(self) -> tuple[list[dict], list[Reject]]:
        """Question states; questions without a baseline answer are skipped and counted."""
        states, self.skipped = _question_states(self.ev)
        self.wanted = {s["row_id"] for s in states}
        return states, []

    def done_ids(self) -> set[str]:
        """Questions already judged."""
        return self.stage.done_ids()

    def batches(self, todo: list[dict], pools: PoolSet) -> Iterator[list[dict]]:
        """Answered, judged and graded questions, batch by batch."""
        steps = _steps(self.ev, pools.start(_models(self.ev, todo)), todo)
        return stream_states(todo, steps, self.ev.batch_size)

    def write(self, batch: list[dict]) -> BatchOutcome:
        """Write judged questions and their judgments; failed ones become rejects."""
        return _write_batch(batch, self.ev, self.stage, self.audit)

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
            bench.key(): benchmark_results(
                [r for r in rows if r["benchmark"] == bench.key()],
                ev.model,
                baseline_name(ev, bench),
                self.skipped[bench.key()],
                ev.bootstrap_rounds,
                seed=ev.sampling.seed,
            )
            for bench in ev.benchmarks
        }
        (self.stage.path / "results.json").write_text(json.dumps({"benchmarks": results}, indent=2))
        return {"benchmarks": results}


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
        graded = bench.format == "mt_bench" or (
            bench.format == "auto" and detect_format(Path(bench.path)) == "mt_bench"
        )
        for question in questions[: bench.limit]:
            baseline = None
            if ev.baseline_of(bench) == "answers":
                baseline = question.baseline_answer
                if baseline is None or len(baseline) < len(question.turns):
                    skipped[bench.key()] += 1
                    continue
            row_id = question_row_id(bench.key(), question.question_id)
            source = f"{bench.key()}#{question.question_id}"
            state = new_question_state(row_id, question, source, baseline, graded)
            state["benchmark"] = bench.key()
            states.append(state)
    return states, skipped


def _grader(ev: EvaluateConfig) -> str:
    return ev.grader or ev.judging.judges[0]


def _models(ev: EvaluateConfig, todo: list[dict]) -> list[str]:
    """Distinct models the questions to do need: a model in several roles gets one pool."""
    roles = [ev.model, *ev.judging.models()]
    if any(not s["baseline_answers"] for s in todo):
        roles.append(str(ev.baseline_model))
    if any(s["graded"] for s in todo):
        roles.append(_grader(ev))
    return list(dict.fromkeys(roles))


def _steps(ev: EvaluateConfig, pools: dict, todo: list[dict]) -> list[StreamStep]:
    answerers = {"model_answers": pools[ev.model]}
    if any(not s["baseline_answers"] for s in todo):
        answerers["baseline_answers"] = pools[str(ev.baseline_model)]
    num_turns = max(len(s["turns"]) for s in todo)
    steps = [
        StreamStep(AnswerStep(answerers, turn, ev.sampling), f"answer_turn_{turn + 1}")
        for turn in range(num_turns)
    ]
    steps += judging_steps(pools, ev.judging, "round_robin")  # one pair: (model, baseline)
    if any(s["graded"] for s in todo):
        grade = GradeStep(pools[_grader(ev)], ev.grading_mode, ev.judging.sampling)
        steps.append(StreamStep(grade, "grade"))
    return steps


def _write_batch(
    batch: list[dict], ev: EvaluateConfig, stage: StageDir, audit: StageDir
) -> BatchOutcome:
    final_judge = AGGREGATOR if ev.judging.aggregator_judge else None
    rows, judgments, rejects = [], [], []
    for state in batch:
        if state["error"]:  # an engine failure: retried by the next run
            failed = bool(state.get("failed"))
            rejects.append(Reject(state["source"], -1, state["error"], state["row_id"], failed))
            continue
        [comparison] = pair_comparisons(state, [PAIR], final_judge)
        stats = judgment_stats(state, [PAIR], final_judge)
        rows.append(
            {
                **{key: state[key] for key in _STATE_COLUMNS},
                "score": comparison.score_i,
                "stats": json.dumps(stats),
            }
        )
        judgments += [audit_row(state, j) for j in state["judgments"]]
    audit.write_shard(judgments, judgment_schema())
    stage.write_shard(rows, question_schema())
    return BatchOutcome(len(rows), rejects)


def question_schema():
    """Arrow schema of the stage's rows: one judged question with both sides' answers and grades."""
    import pyarrow as pa

    strings = pa.list_(pa.string())
    grade = pa.struct([("turn", pa.int32()), ("score", pa.float64()), ("raw", pa.string())])
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
            ("score", pa.float64()),
            ("stats", pa.string()),
        ]
    )


def benchmark_results(
    rows: list[dict],
    model: str,
    baseline: str,
    num_skipped: int,
    bootstrap_rounds: int,
    seed: int = 0,
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
        seed: seed of the resampling.

    Returns:
        Counts and win rate (:func:`win_tie_loss`), ``lc_win_rate`` (answer lengths in characters),
        ``bt`` (``{"score", "lower", "upper"}`` or None when nothing was decided), ``mt_bench``
        (:func:`mt_bench_summary`, or None when nothing was graded), abstain and position-bias
        rates. NaN is written as None.
    """
    scores = [row["score"] for row in rows]
    result: dict = {"baseline": baseline, "judged": len(rows), "skipped_no_baseline": num_skipped}
    result.update(win_tie_loss(scores))
    result["lc_win_rate"] = length_controlled_win_rate(
        scores,
        [len(row["model_answers"][-1]) for row in rows],
        [len(row["baseline_answers"][-1]) for row in rows],
    )
    battles = [(model, baseline, score) for score in scores if score is not None]
    result["bt"] = None
    if battles:
        point = bradley_terry_battles(battles, baseline)[model]
        _, lower, upper = bootstrap_ci(battles, baseline, bootstrap_rounds, seed)[model]
        result["bt"] = {"score": point, "lower": lower, "upper": upper}
    grades = [grade for row in rows for grade in row["grades"]]
    result["mt_bench"] = mt_bench_summary(grades) if grades else None
    totals: Counter = Counter()
    for row in rows:
        totals.update(json.loads(row["stats"]))
    result["abstain_rate"] = _rate(totals["abstains"], totals["judgments"])
    result["position_bias_rate"] = _rate(totals["position_flips"], totals["pairs"])
    return _json_safe(result)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _json_safe(value):
    """NaN as None and keys as strings, so results read the same from memory and from JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
