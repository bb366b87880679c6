"""The ``evaluate`` section and its benchmarks: question files, baselines, judges and graders."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from moaa_ray.config.base import OPERATIONAL, Section
from moaa_ray.config.stages import JudgingConfig, SamplingConfig


class BenchmarkConfig(Section):
    """A benchmark question file in its native format (read by moaa_ray.core.benchmarks)."""

    path: str = Field(
        description="MT-Bench / Arena-Hard question.jsonl, an AlpacaEval JSON file, or verified "
        "prompts (JSON Lines or list of {prompt} or {turns}, optional id)"
    )
    name: str | None = Field(None, description="key in results.json; None: the file name's stem")
    format: Literal["auto", "mt_bench", "arena_hard", "alpaca_eval", "verified"] = Field(
        "auto",
        description="auto: mt_bench, arena_hard or alpaca_eval, detected from the first row; "
        "verified (never detected: name it): only the model answers, the top-level verifier "
        "scores exact-match accuracy, no baseline and no judges",
    )
    reference_answers_path: str | None = Field(
        None, description="mt_bench: reference answers shown to the grader"
    )
    baseline_answers_path: str | None = Field(
        None, description="arena_hard: the baseline model's answers (model_answer/<name>.jsonl)"
    )
    baseline: Literal["model", "answers", "none"] | None = Field(
        None,
        description="model: evaluate.baseline_model answers; answers: the file's baseline answers "
        "(questions without one are skipped); none (mt_bench only): no baseline and no pairwise "
        "judging, the grader rates the model's answers; None: model if baseline_model is set",
    )
    limit: int | None = Field(None, ge=1, description="evaluate the first N questions")
    gamed_baseline_path: str | None = Field(
        None,
        description="alpaca_eval: AlpacaEval's df_gamed.csv (Hugging Face dataset "
        "tatsu-lab/alpaca_eval): its gamed baselines' annotations and each instruction's "
        "difficulty, which make the LC win rate alpaca_eval's length_controlled_v1; None: an LC "
        "fallback, not comparable with the leaderboard. Read whenever results.json is written: "
        "adding it to a finished evaluation recomputes the LC without judging again",
        json_schema_extra=OPERATIONAL,
    )
    judge: Literal["auto", "ensemble", "arena_hard", "alpaca_eval"] = Field(
        "auto",
        description="ensemble: the evaluate judges with the aggregator judge; arena_hard: each "
        "judge as arena-hard-auto judges (its prompt, 5-level verdicts, two games, BT scores); "
        "alpaca_eval: each judge as AlpacaEval 2's leaderboard judges (alpaca_eval 0.6.6's "
        "weighted_alpaca_eval_gpt4_turbo: its prompt, its seeded order per instruction, the "
        "preference weighted by the first token's log-probabilities of m and M, top 5 from "
        "openai_http; function judges' text m or M; verdict_mode does not apply); auto: "
        "arena_hard for arena_hard files, else ensemble (never alpaca_eval: files judged by the "
        "ensemble keep their judge)",
    )
    style_control: bool = Field(
        False, description="arena_hard: also report style-controlled scores (length, markdown)"
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description="longest answer on this benchmark, in tokens (FastChat's MT-Bench: 1024); "
        "None: evaluate.sampling.max_new_tokens",
    )
    category_temperatures: bool = Field(
        True,
        description="mt_bench: answer at FastChat's temperature per category (writing, roleplay "
        "0.7; stem, humanities 0.1; math, coding, reasoning, extraction 0; others 0.7); "
        "false: evaluate.sampling.temperature",
    )

    @model_validator(mode="after")
    def _verified_has_no_baseline(self) -> BenchmarkConfig:
        if not self.verified:
            return self
        set_keys = self._set_keys(
            baseline=None,
            baseline_answers_path=None,
            reference_answers_path=None,
            gamed_baseline_path=None,
            judge="auto",
            style_control=False,
        )
        if set_keys:
            raise ValueError(
                f"format 'verified' has no baseline and no judges; remove {', '.join(set_keys)}"
            )
        return self

    @model_validator(mode="after")
    def _no_baseline_is_graded_mt_bench(self) -> BenchmarkConfig:
        """``baseline: none`` leaves only MT-Bench's grading: no other format has a score without
        a baseline, and keys of the pairwise judging would be ignored."""
        if self.baseline != "none":
            return self
        if self.format not in ("auto", "mt_bench"):
            raise ValueError(
                f"benchmark {self.key()!r}: baseline 'none' (grading only) is for mt_bench "
                f"benchmarks, not format {self.format!r}"
            )
        set_keys = self._set_keys(
            baseline_answers_path=None,
            gamed_baseline_path=None,
            judge="auto",
            style_control=False,
        )
        if set_keys:
            raise ValueError(
                f"benchmark {self.key()!r}: baseline 'none' has no pairwise judging; remove "
                f"{', '.join(set_keys)}"
            )
        return self

    def _set_keys(self, **unset: object) -> list[str]:
        """The keys among ``unset`` whose value differs from the one given there."""
        return [key for key, value in unset.items() if getattr(self, key) != value]

    @property
    def verified(self) -> bool:
        """Whether the verifier scores the benchmark (exact match) instead of the judges."""
        return self.format == "verified"

    def key(self) -> str:
        """The benchmark's name in results and row ids."""
        return self.name or Path(self.path).stem


class GradingSamplingConfig(Section):
    """The MT-Bench grader's request; the defaults are FastChat's (``run_judge_single`` asks GPT-4
    at temperature 0 for at most 2048 tokens, without a seed or top_p)."""

    temperature: float = Field(0.0, ge=0, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass, in (0, 1]")
    max_new_tokens: int = Field(2048, ge=1, description="longest grader reply, in tokens")
    seed: int | None = Field(None, description="random seed of the calls; None: unseeded")


class EvaluateConfig(Section):
    """The model against a baseline, judged by the ensemble: win rates, LC win rate, BT score, grades.

    Verified benchmarks are scored by the top-level verifier instead: exact-match accuracy; graded-
    only MT-Bench ones (``baseline: none``) by the grader alone: MT-Bench grades.
    """

    benchmarks: list[BenchmarkConfig] = Field(min_length=1, description="question files")
    model: str = Field(description="model name evaluated (in `moaa run`: the trained model)")
    baseline_model: str | None = Field(
        None, description="model name answering as the baseline; None: the files' answers"
    )
    sampling: SamplingConfig = Field(
        SamplingConfig(temperature=0.0), description="answers of the model and baseline model"
    )
    judging: JudgingConfig | None = Field(
        None,
        description="the judges, each answer pair in both orders; needed unless every benchmark "
        "is verified or graded only (baseline 'none', with a grader)",
    )
    grader: str | None = Field(
        None, description="MT-Bench 1-10 grader (sampling: grading_sampling); None: the first judge"
    )
    grading_sampling: GradingSamplingConfig | None = Field(
        None,
        description="the grader's sampling ({} gives FastChat's: temperature 0, 2048 tokens, no "
        "seed); None: judging.sampling (without judging: its default)",
    )
    grading_mode: Literal["text", "logprob"] = Field(
        "text", description="parse 'Rating: [[N]]', or the expected grade from P(1..10)"
    )
    num_samples: int = Field(
        1,
        ge=1,
        description="answers sampled per question of a verified benchmark (the last turn's): its "
        "accuracy is their mean over questions and samples (avg@n), with a 95% interval over "
        "questions; needs a sampling temperature above 0",
    )
    bootstrap_rounds: int = Field(100, ge=1, description="resamples for the BT score's 95% CI")
    every_round: bool = Field(
        False,
        description="`moaa run` also evaluates the starting model (base/evaluate/), the SFT model "
        "(round-0/evaluate/) and each DPO round's model before the last (round-<r>/evaluate/), "
        "and the report compares them",
    )
    batch_size: int = Field(
        4, ge=1, description="questions per Ray Data batch", json_schema_extra=OPERATIONAL
    )

    @model_validator(mode="after")
    def _baselines_are_defined(self) -> EvaluateConfig:
        if self.baseline_model is not None and self.baseline_model == self.model:
            raise ValueError(f"baseline_model is the evaluated model {self.model!r}")
        if self.num_samples > 1 and not all(b.verified for b in self.benchmarks):
            judged = [b.key() for b in self.benchmarks if not b.verified]
            raise ValueError(
                f"num_samples {self.num_samples} is for verified benchmarks, and {judged} are "
                "judged or graded: evaluate them in a config of their own"
            )
        if self.num_samples > 1 and self.sampling.temperature == 0.0:
            raise ValueError(
                f"num_samples {self.num_samples} at sampling.temperature 0: greedy answers are "
                "all the same; set num_samples 1 or a temperature above 0"
            )
        keys = [b.key() for b in self.benchmarks]
        if len(set(keys)) < len(keys):
            raise ValueError(f"benchmark names must be unique, got {keys}; set 'name'")
        for bench in self.benchmarks:
            if self.baseline_of(bench) == "model" and self.baseline_model is None:
                raise ValueError(
                    f"benchmark {bench.key()!r}: baseline 'model' but no baseline_model"
                )
            if self.judged(bench) and self.judging is None:
                raise ValueError(
                    f"benchmark {bench.key()!r} is judged and needs 'judging' (only format "
                    "'verified' and baseline 'none' need no judges)"
                )
            if self.baseline_of(bench) == "none" and self.grader is None and self.judging is None:
                raise ValueError(
                    f"benchmark {bench.key()!r} is graded only (baseline 'none') and needs "
                    "'grader' (or 'judging', whose first judge grades)"
                )
        return self

    def baseline_of(self, bench: BenchmarkConfig) -> Literal["model", "answers", "none"] | None:
        """Who answers as the baseline on a benchmark: ``none`` for a graded-only one, None for a
        verified one."""
        if bench.verified:
            return None
        return bench.baseline or ("model" if self.baseline_model else "answers")

    def judged(self, bench: BenchmarkConfig) -> bool:
        """Whether the judges compare the model's answers with a baseline's on a benchmark."""
        return self.baseline_of(bench) in ("model", "answers")
