"""The one typed config schema of moaa_ray: YAML files plus ``key=value`` overrides.

Unknown keys, wrong types and references to models that are not defined are errors that name the key
and the file (or the override) they came from. Relative paths resolve against the working directory,
which under ``ray job submit --working-dir .`` is the uploaded project.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from moaa_ray.callables import check_callable_spec
from moaa_ray.real_models import REAL_PREFIX, check_real_model
from moaa_ray.tiny_catalog import KNOWN_MODELS, TINY_PREFIX


class ConfigError(ValueError):
    """Config problems, one per line, each worded as ``<source>: <dotted.key>: <what is wrong>``."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Marks a key that changes how a stage runs but not what it writes (replicas, batch sizes, timeouts):
# a stage's fingerprint leaves it out, so changing it never invalidates finished results.
OPERATIONAL: dict[str, Any] = {"operational": True}


class SimulatedConfig(_Section):
    """The ``simulated`` engine: a test instrument with no model (orchestration tests, benchmarks).

    It answers after a latency without using CPU, with deterministic text, verdicts and scores, and
    injects faults.
    """

    load_s: float = Field(
        0.0,
        ge=0,
        description="seconds the engine takes to load, without CPU (as a large model's weights)",
        json_schema_extra=OPERATIONAL,
    )
    latency_s: float = Field(0.0, ge=0, description="fixed seconds per engine call")
    latency_per_token_s: float = Field(
        0.0, ge=0, description="seconds per generated token (the batch's longest answer)"
    )
    answer_tokens: int | None = Field(
        None,
        ge=1,
        description="words per answer, cut at the call's max_new_tokens; None: max_new_tokens",
    )
    failure_rate: float = Field(
        0.0, ge=0, le=1, description="probability that a call raises", json_schema_extra=OPERATIONAL
    )
    fail_first_n: int = Field(
        0,
        ge=0,
        description="the first N calls of each replica raise",
        json_schema_extra=OPERATIONAL,
    )
    hang_marker: str | None = Field(
        None,
        description="a call with a prompt containing it never returns",
        json_schema_extra=OPERATIONAL,
    )
    crash_after_calls: int | None = Field(
        None,
        ge=1,
        description="the replica's process exits on this call (its restart does not crash again)",
        json_schema_extra=OPERATIONAL,
    )
    poison_marker: str | None = Field(
        None,
        description="a call with a prompt containing it raises",
        json_schema_extra=OPERATIONAL,
    )
    seed: int = Field(0, description="varies the deterministic answers")


# Conversations a replica's engine works on at once, where 16 would leave it half empty: hf batches
# 64 about as fast per step as 16, and vLLM keeps up to 256 sequences in its running batch.
ENGINE_BATCH_SIZES = {"hf": 64, "vllm": 256}


class ModelConfig(_Section):
    """One model and the Ray actor pool that serves it."""

    engine: Literal["hf", "vllm", "openai_http", "hf_reward", "pairrm", "simulated", "function"] = (
        Field(
            "hf",
            description="inference backend; hf_reward: a sequence-classification reward model; "
            "pairrm: a PairRM pairwise ranker (llm-blender/PairRM-hf checkpoint format); "
            "simulated: no model, for tests and benchmarks; function: the Python function named by "
            "path writes the answers or scores (e.g. a task's programmatic judge or verifier)",
        )
    )
    path: str = Field(
        description="local directory, hub name, tiny:<name> or real:<name> (built offline; real: "
        'needs pip install -e ".[real]"); for engine function: package.module:function'
    )
    num_replicas: list[int] = Field(
        [1, 1], description="[min, max] actors in the pool", json_schema_extra=OPERATIONAL
    )
    num_gpus: float = Field(
        0,
        ge=0,
        description="GPUs per actor; for vllm, its tensor-parallel size",
        json_schema_extra=OPERATIONAL,
    )
    num_cpus: float = Field(1, ge=0, description="CPUs per actor", json_schema_extra=OPERATIONAL)
    resources: dict[str, float] = Field(
        {},
        description="custom Ray resources per actor (e.g. to keep a model on labelled nodes)",
        json_schema_extra=OPERATIONAL,
    )
    max_batch_size: int = Field(
        16,
        ge=1,
        description="conversations a replica's engine works on at once: merged into one batch (hf, "
        "reward models), or running in its continuous batch (vllm); unset: 64 for hf, 256 for vllm",
        json_schema_extra=OPERATIONAL,
    )
    trust_remote_code: bool = Field(False, description="run code shipped with the model")
    max_model_len: int | None = Field(
        None,
        ge=2,
        description="context window in tokens that prompts are fitted to (hf and vllm: given to "
        "vLLM too); None: vLLM's engine_kwargs.max_model_len, else the model config's",
    )
    dtype: str = Field("auto", description="torch dtype name; auto = bf16 on GPU, fp32 on CPU")
    engine_kwargs: dict[str, Any] = Field(
        {}, description="passed through to the backend as is (function: its keyword arguments)"
    )
    api_base: str | None = Field(
        None, description="openai_http: endpoint base URL", json_schema_extra=OPERATIONAL
    )
    api_key_env: str | None = Field(
        None, description="openai_http: env var holding the API key", json_schema_extra=OPERATIONAL
    )
    request_timeout_s: float = Field(
        600,
        gt=0,
        description="longest run of one engine call on its replica (queueing not counted); a "
        "call past it fails and its replica restarts",
        json_schema_extra=OPERATIONAL,
    )
    startup_timeout_s: float = Field(
        900,
        gt=0,
        description="longest wait for the pool's min actors, at start and after replica loss",
        json_schema_extra=OPERATIONAL,
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="tries per item (other replicas first, with backoff) before it fails",
        json_schema_extra=OPERATIONAL,
    )
    retry_backoff_s: float = Field(
        1.0,
        ge=0,
        description="delay before a retry; doubles each time",
        json_schema_extra=OPERATIONAL,
    )
    max_restarts: int = Field(
        -1,
        ge=-1,
        description="restarts of a dead engine actor (-1: unbounded; the pool gives up when fewer "
        "than min replicas are alive for startup_timeout_s)",
        json_schema_extra=OPERATIONAL,
    )
    simulated: SimulatedConfig = Field(
        SimulatedConfig(), description="settings of the simulated engine"
    )

    @model_validator(mode="before")
    @classmethod
    def _engine_batch_size(cls, data: Any) -> Any:
        """An unset ``max_batch_size`` is the engine's: what keeps its batches full."""
        if isinstance(data, dict) and "max_batch_size" not in data:
            size = ENGINE_BATCH_SIZES.get(data.get("engine", "hf"))
            if size is not None:
                return {**data, "max_batch_size": size}
        return data

    @field_validator("num_replicas")
    @classmethod
    def _min_max(cls, value: list[int]) -> list[int]:
        if len(value) != 2 or not 1 <= value[0] <= value[1]:
            raise ValueError(f"expected [min, max] with 1 <= min <= max, got {value}")
        return value

    @field_validator("path")
    @classmethod
    def _path_fits_engine(cls, value: str, info) -> str:
        # engine is declared first, so it is validated (and in info.data) before path.
        if info.data.get("engine") == "function":
            return check_callable_spec(value)
        _check_model_path(value)
        return value


def _check_model_path(path: str) -> None:
    """Raise ValueError when ``path`` names an unknown tiny or real model, a real model whose
    packages are missing, or a missing local directory."""
    if path.startswith(REAL_PREFIX):
        check_real_model(path)
    elif path.startswith(TINY_PREFIX):
        if path[len(TINY_PREFIX) :] not in KNOWN_MODELS:
            raise ValueError(f"no tiny model {path!r}; known: {sorted(KNOWN_MODELS)}")
    elif path.startswith(("/", ".", "~")) and not Path(path).expanduser().exists():
        raise ValueError(f"model directory {path!r} does not exist")


class InputConfig(_Section):
    """A prompt source: JSONL or Parquet file (or directory of them), or a datasets name/path."""

    path: str = Field(description="file, directory, or datasets hub name")
    format: Literal["auto", "jsonl", "parquet", "datasets"] = Field(
        "auto", description="auto: from the file suffix; otherwise a datasets name"
    )
    split: str = Field("train", description="datasets split")
    prompt_column: str = Field("prompt", description="single-turn prompt text (UltraFeedback)")
    messages_column: str | None = Field(None, description="conversation column (UltraChat)")
    system_column: str | None = Field(None, description="optional system prompt column")
    limit: int | None = Field(None, ge=0, description="read only the first N rows")
    sample: int | None = Field(
        None,
        ge=0,
        description="keep a random N of the rows read (after limit), drawn by seed from each "
        "row's position in the source: the same rows on every rerun and cluster; rows keep their order",
    )
    seed: int = Field(0, description="seed of sample")
    max_prompt_chars: int = Field(16000, ge=1, description="longer conversations are rejected")


class SamplingConfig(_Section):
    """Sampling for one engine call."""

    temperature: float = Field(0.7, ge=0, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass, in (0, 1]")
    max_new_tokens: int = Field(2048, ge=1, description="longest answer, in tokens")
    seed: int = Field(0, description="random seed of the engine calls")


class GenerateConfig(_Section):
    """The MoA SFT-data stage (MoA, arXiv 2406.04692): layers of proposers, then one aggregator."""

    inputs: list[InputConfig] = Field(description="prompt sources, concatenated")
    proposers: list[str] = Field(
        [], description="model names answering in every layer but the last (or layer_proposers)"
    )
    layer_proposers: list[list[str]] | None = Field(
        None,
        description="model names of each proposer layer (num_layers - 1 lists), e.g. [[a, b, c], "
        "[a, d]]; instead of proposers",
    )
    aggregator: str = Field(description="model name of the last layer")
    num_layers: int = Field(2, ge=2, description="proposer layers + the aggregator layer")
    sampling: SamplingConfig = SamplingConfig()
    aggregate_template: str = Field("aggregate.txt", description="prompts/ file or own path")
    min_references: int | None = Field(
        None,
        ge=1,
        description="fewest previous-layer answers an aggregating layer may use; None: all of them "
        "(a row with fewer fails and is retried by the next run)",
    )
    truncated_answers: Literal["drop", "keep"] = Field(
        "drop",
        description="a final answer cut at max_new_tokens: drop the row (a reject) or keep it as an "
        "SFT target; cut references are kept either way (counted in the summary)",
    )
    mode: Literal["streaming", "staged"] = Field(
        "streaming",
        description="staged = one model on the cluster at a time",
        json_schema_extra=OPERATIONAL,
    )
    batch_size: int = Field(
        8, ge=1, description="rows per Ray Data batch", json_schema_extra=OPERATIONAL
    )

    @model_validator(mode="after")
    def _every_proposer_layer_has_models(self) -> GenerateConfig:
        if self.layer_proposers is None:
            if not self.proposers:
                raise ValueError("name the proposers: 'proposers' or 'layer_proposers'")
            return self
        if self.proposers:
            raise ValueError(
                "give 'proposers' (the same in every layer) or 'layer_proposers', not both"
            )
        expected = self.num_layers - 1
        if len(self.layer_proposers) != expected:
            raise ValueError(
                f"layer_proposers lists {len(self.layer_proposers)} layers; num_layers="
                f"{self.num_layers} has {expected} proposer layers (the last is the aggregator)"
            )
        for index, layer in enumerate(self.layer_proposers):
            if not layer:
                raise ValueError(f"layer_proposers.{index} names no model")
        return self


class JudgingConfig(_Section):
    """The judge ensemble: "MoA as reward model" (MoAA, arXiv 2505.03059), also used by evaluation."""

    judges: list[str] = Field(description="judge model names; one judge = single-judge ablation")
    aggregator_judge: str | None = Field(None, description="reads the judges' evaluations")
    criteria_selector: str | None = Field(
        None, description="picks criteria per prompt; None: defaults"
    )
    criteria_file: str | None = Field(
        None, description="own criteria list; None: prompts/criteria.txt"
    )
    num_criteria: int = Field(3, ge=1, description="criteria kept per prompt")
    default_criteria: list[str] = Field(
        ["helpfulness", "accuracy", "clarity"], description="used when selection fails or is off"
    )
    verdict_mode: Literal["text", "logprob"] = Field(
        "text", description="parse a written verdict, or read P(A) vs P(B) at the verdict token"
    )
    tie_band: float = Field(
        0.0, ge=0, le=0.5, description="logprob verdicts: |P(A) - 0.5| <= tie_band is a tie"
    )
    order_policy: Literal["both_required", "average", "any"] = Field(
        "both_required",
        description="a pair with a verdict in one A/B order only: both_required = it abstains "
        "(MoAA); average = the missing order counts as a tie; any = that order decides",
    )
    aggregator_fallback: Literal["judges_mean", "abstain"] = Field(
        "judges_mean",
        description="an order the aggregator judge gives no verdict on: the judges' mean score "
        "decides, or the order abstains",
    )
    sampling: SamplingConfig = SamplingConfig(temperature=0.0, max_new_tokens=512)

    @model_validator(mode="after")
    def _defaults_are_known_criteria(self) -> JudgingConfig:
        from moaa_ray.core.criteria import load_criteria

        known = {c.name for c in load_criteria(self.criteria_file)}
        unknown = [name for name in self.default_criteria if name not in known]
        if unknown:
            raise ValueError(
                f"default_criteria {unknown} are not in the criteria list {sorted(known)}"
            )
        return self

    def models(self) -> list[str]:
        """Every model the ensemble uses."""
        roles = [self.criteria_selector, *self.judges, self.aggregator_judge]
        return [r for r in roles if r is not None]


class PreferencesConfig(_Section):
    """On-policy samples ranked by a reward source into DPO pairs (MoAA, arXiv 2505.03059)."""

    inputs: list[InputConfig] = Field(description="preference prompt sources, concatenated")
    policy: str = Field(description="model name that samples (in `moaa run`: the SFT model)")
    num_samples: int = Field(5, ge=2, description="K answers per prompt")
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=1024)
    reward: Literal["llm_judges", "scalar_rm", "pairwise_ranker", "likelihood"] = Field(
        "llm_judges",
        description="llm_judges: the judging ensemble; scalar_rm, pairwise_ranker: a reward "
        "model; likelihood: each sample's mean token log-probability under reward_model (an hf "
        "causal LM, e.g. the policy: its own confidence)",
    )
    judging: JudgingConfig | None = Field(None, description="the ensemble, for reward llm_judges")
    reward_model: str | None = Field(
        None, description="scalar_rm / pairwise_ranker / likelihood model name"
    )
    pairing: Literal["round_robin", "anchor"] = Field("round_robin", description="pairs judged")
    ranking: Literal["bradley_terry", "wins"] = Field("bradley_terry", description="sample scores")
    min_margin: float = Field(0.0, ge=0, description="best - worst score must exceed this")
    truncated_samples: Literal["drop", "keep"] = Field(
        "drop",
        description="samples cut at max_new_tokens: dropped before judging (counted) or kept as "
        "DPO samples",
    )
    batch_size: int = Field(
        4, ge=1, description="prompts per Ray Data batch", json_schema_extra=OPERATIONAL
    )

    @model_validator(mode="after")
    def _reward_source_is_complete(self) -> PreferencesConfig:
        if self.reward == "llm_judges" and self.judging is None:
            raise ValueError("reward 'llm_judges' needs a 'judging' section")
        if self.reward != "llm_judges" and self.reward_model is None:
            raise ValueError(f"reward {self.reward!r} needs 'reward_model'")
        return self


class BenchmarkConfig(_Section):
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
    instruction_difficulty_path: str | None = Field(
        None,
        description="alpaca_eval: AlpacaEval's instruction_difficulty.csv (Hugging Face dataset "
        "tatsu-lab/alpaca_eval), keyed by position in its 805 instructions, for the LC win rate",
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
            instruction_difficulty_path=None,
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
            instruction_difficulty_path=None,
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


class EvaluateConfig(_Section):
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
        None,
        description="MT-Bench 1-10 grader, sampling as judging.sampling (without judging: its "
        "default); None: the first judge",
    )
    grading_mode: Literal["text", "logprob"] = Field(
        "text", description="parse 'Rating: [[N]]', or the expected grade from P(1..10)"
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


class RayConfig(_Section):
    """How to reach Ray."""

    address: str | None = Field(None, description="None: $RAY_ADDRESS or a new local cluster")
    num_cpus: int | None = Field(None, ge=1, description="logical CPUs of a new local cluster")
    stall_timeout_s: float = Field(
        1800,
        gt=0,
        description="a stage that finishes no batch for this long fails, naming what is pending",
    )
    train_start_timeout_s: float = Field(
        900, gt=0, description="longest wait for Ray Train's workers to be placed"
    )


class LoraConfig(_Section):
    """LoRA adapters via peft; folded into the weights when the model is saved."""

    r: int = Field(16, ge=1, description="adapter rank")
    alpha: float = Field(32, gt=0, description="updates are scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"], description="names of the linear layers to adapt"
    )


class TrainConfig(_Section):
    """A Ray Train run with DeepSpeed; the keys the SFT and DPO sections share."""

    model: str | None = Field(None, description="model name under 'models' to start from")
    data_path: str | None = Field(
        None, description="directory of part-*.parquet shards; None: the run's input stage folder"
    )
    learning_rate: float = Field(1e-5, gt=0, description="peak learning rate")
    num_epochs: int = Field(1, ge=1, description="passes over the data")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    global_batch_size: int = Field(128, ge=1, description="rows per optimizer step, all workers")
    micro_batch_size: int = Field(1, ge=1, description="rows per forward pass and worker")
    max_seq_len: int = Field(2048, ge=2, description="tokens per sequence; longer ones are cut")
    packing: bool = Field(
        False, description="padding-free packed rows; pays with flash_attention_2 kernels"
    )
    attn_implementation: str = Field("sdpa", description="transformers attention kernel")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="learning-rate decay after warmup"
    )
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="fraction of steps of linear warmup")
    optimizer: Literal["adamw", "rmsprop"] = Field(
        "adamw", description="torch AdamW (fused), or torch RMSprop (SPPO's recipe)"
    )
    weight_decay: float = Field(
        0.0, ge=0, description="weight decay (AdamW: decoupled; RMSprop: an L2 term)"
    )
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm; 0 = off")
    num_workers: list[int] = Field(
        [1, 1],
        description="[min, max] Ray Train workers; elastic when min < max",
        json_schema_extra=OPERATIONAL,
    )
    gpus_per_worker: float = Field(0, ge=0, description="0: CPU workers (gloo, fp32); else bf16")
    cpus_per_worker: float = Field(
        1, gt=0, description="logical CPUs per worker", json_schema_extra=OPERATIONAL
    )
    zero_stage: Literal[0, 2, 3] = Field(
        2,
        description="DeepSpeed ZeRO stage; 2 on a fixed single worker without offload trains at "
        "stage 0 (nothing to shard, and ZeRO-2's flat copies cost time)",
    )
    offload: bool = Field(False, description="optimizer state (ZeRO-3: also params) in CPU memory")
    lora: LoraConfig | None = Field(None, description="train LoRA adapters, not all weights")
    checkpoint_every_steps: int = Field(
        100,
        ge=1,
        description="checkpoint interval; also at the end",
        json_schema_extra=OPERATIONAL,
    )
    num_checkpoints_to_keep: int = Field(
        2, ge=1, description="older checkpoints are deleted", json_schema_extra=OPERATIONAL
    )
    max_failures: int = Field(
        3, ge=0, description="worker failures survived by resuming", json_schema_extra=OPERATIONAL
    )
    seed: int = Field(0, description="data order and initialization seed")

    @field_validator("num_workers")
    @classmethod
    def _min_max_workers(cls, value: list[int]) -> list[int]:
        return ModelConfig._min_max(value)

    @field_validator("zero_stage")
    @classmethod
    def _zero3_fixed_workers(cls, value: int, info) -> int:
        workers = info.data.get("num_workers", [1, 1])
        if value == 3 and workers[0] != workers[1]:
            raise ValueError(
                "ZeRO-3 checkpoints resume only on the same worker count: fix num_workers"
            )
        return value

    @model_validator(mode="after")
    def _batch_covers_workers(self) -> TrainConfig:
        if self.global_batch_size < self.num_workers[1]:
            raise ValueError(
                f"global_batch_size={self.global_batch_size} gives some of the up to "
                f"{self.num_workers[1]} workers no rows: raise it or lower num_workers"
            )
        return self

    @field_validator("offload")
    @classmethod
    def _offload_needs_zero(cls, value: bool, info) -> bool:
        if value and info.data.get("zero_stage") == 0:
            raise ValueError("offload needs zero_stage 2 or 3")
        return value


class SFTConfig(TrainConfig):
    """Supervised fine-tuning of the target model on the MoA dataset (loss on assistant tokens)."""

    model: str = Field(description="model name under 'models' to fine-tune")
    learning_rate: float = Field(8e-6, gt=0, description="peak learning rate (paper: 8e-6)")


class DPOConfig(TrainConfig):
    """DPO from the SFT model (also the reference) on the MoA-judged preference pairs."""

    model: str | None = Field(
        None, description="model name under 'models'; None: the run's sft/model"
    )
    learning_rate: float = Field(5e-7, gt=0, description="peak learning rate")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="fraction of steps of linear warmup")
    beta: float = Field(0.1, gt=0, description="strength of the pull towards the reference")
    loss_type: Literal["sigmoid", "ipo", "robust", "sppo"] = Field(
        "sigmoid",
        description="sigmoid: DPO (cDPO with label_smoothing); ipo; robust: robust DPO; sppo: "
        "SPPO, each answer's log-ratio regressed onto its win rate among the prompt's samples",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed label-flip rate")
    sft_loss_weight: float = Field(0.0, ge=0, description="adds this times the chosen answers' NLL")
    precompute_ref_logprobs: bool = Field(
        True, description="reference log-probs computed once before training, not every step"
    )
    swap_pairs: bool = Field(
        False,
        description="negative control: train on every pair with chosen and rejected swapped; "
        "the model should get worse",
    )


class MoaaConfig(_Section):
    """A whole run. Stage sections are optional; a stage needs its own."""

    run_dir: str = Field(
        "runs/demo", description="where every stage writes; shared storage on multi-node"
    )
    ray: RayConfig = RayConfig()
    iterations: int = Field(1, ge=1, description="rounds of sample/judge/DPO in `moaa run`")
    verifier: str | None = Field(
        None,
        description="package.module:function(messages, answer) -> bool | None that checks an "
        "answer (None: not checkable); stages then report accuracy, and 'verified' benchmarks "
        "score exact-match accuracy (e.g. moaa_ray.tasks.addition:verify)",
    )
    models: dict[str, ModelConfig]
    generate: GenerateConfig | None = None
    preferences: PreferencesConfig | None = None
    sft: SFTConfig | None = None
    dpo: DPOConfig | None = None
    evaluate: EvaluateConfig | None = None

    @field_validator("verifier")
    @classmethod
    def _callable_spec(cls, value: str | None) -> str | None:
        return None if value is None else check_callable_spec(value)

    @field_validator("evaluate")
    @classmethod
    def _verified_benchmarks_have_a_verifier(
        cls, value: EvaluateConfig | None, info: ValidationInfo
    ) -> EvaluateConfig | None:
        verified = [b.key() for b in value.benchmarks if b.verified] if value else []
        if verified and info.data.get("verifier") is None:
            raise ValueError(
                f"benchmarks {verified} have format 'verified' and need the top-level 'verifier' "
                "(package.module:function)"
            )
        return value

    @field_validator("preferences")
    @classmethod
    def _reward_model_fits_the_reward(
        cls, value: PreferencesConfig | None, info: ValidationInfo
    ) -> PreferencesConfig | None:
        model = info.data.get("models", {}).get(value.reward_model) if value else None
        if not (value and model):
            return value
        if model.engine == "pairrm" and value.reward == "scalar_rm":
            raise ValueError(
                f"reward_model {value.reward_model!r} is a pairrm engine: it compares two "
                "answers; set reward: pairwise_ranker"
            )
        if value.reward == "likelihood" and model.engine != "hf":
            raise ValueError(
                f"reward likelihood reads token log-probabilities from an hf causal LM; "
                f"reward_model {value.reward_model!r} has engine {model.engine!r}"
            )
        return value

    @field_validator("dpo")
    @classmethod
    def _sppo_reads_strengths(
        cls, value: DPOConfig | None, info: ValidationInfo
    ) -> DPOConfig | None:
        prefs = info.data.get("preferences")
        counted = prefs is not None and prefs.reward == "llm_judges" and prefs.ranking == "wins"
        if value is not None and value.loss_type == "sppo" and counted:
            raise ValueError(
                "loss_type 'sppo' reads sample scores as Bradley-Terry strengths, and "
                "preferences.ranking 'wins' counts wins: use ranking bradley_terry"
            )
        return value

    @field_validator("models")
    @classmethod
    def _plain_names(cls, value: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        for name in value:
            if "." in name or not name:
                raise ValueError(f"model name {name!r} must be non-empty and contain no '.'")
        return value

    def model_references(self) -> list[tuple[str, str]]:
        """Every (dotted key, model name) in the stage sections."""
        refs: list[tuple[str, str]] = []
        if self.generate:
            refs += [(f"generate.proposers.{i}", m) for i, m in enumerate(self.generate.proposers)]
            refs += [
                (f"generate.layer_proposers.{i}.{j}", m)
                for i, layer in enumerate(self.generate.layer_proposers or [])
                for j, m in enumerate(layer)
            ]
            refs.append(("generate.aggregator", self.generate.aggregator))
        if self.preferences:
            prefs = self.preferences
            refs.append(("preferences.policy", prefs.policy))
            if prefs.reward_model is not None:
                refs.append(("preferences.reward_model", prefs.reward_model))
            if prefs.judging is not None:
                refs += _judging_references("preferences.judging", prefs.judging)
        for key, section in (("sft", self.sft), ("dpo", self.dpo)):
            if section is not None and section.model is not None:
                refs.append((f"{key}.model", section.model))
        if self.evaluate:
            ev = self.evaluate
            refs.append(("evaluate.model", ev.model))
            for role in ("baseline_model", "grader"):
                if getattr(ev, role) is not None:
                    refs.append((f"evaluate.{role}", getattr(ev, role)))
            if ev.judging is not None:
                refs += _judging_references("evaluate.judging", ev.judging)
        return refs


def _judging_references(key: str, judging: JudgingConfig) -> list[tuple[str, str]]:
    refs = _verdict_references(key, judging)
    if judging.criteria_selector is not None:
        refs.append((f"{key}.criteria_selector", judging.criteria_selector))
    return refs


def _verdict_references(key: str, judging: JudgingConfig) -> list[tuple[str, str]]:
    """(dotted key, model name) of the roles that give verdicts: the judges, the aggregator judge."""
    refs = [(f"{key}.judges.{i}", m) for i, m in enumerate(judging.judges)]
    if judging.aggregator_judge is not None:
        refs.append((f"{key}.aggregator_judge", judging.aggregator_judge))
    return refs


def _logprob_references(config: MoaaConfig) -> list[tuple[str, str, str]]:
    """(mode key, dotted key, model name) of every role read by log-probabilities, not text."""
    refs: list[tuple[str, str, str]] = []
    sections = (
        ("preferences.judging", config.preferences.judging if config.preferences else None),
        ("evaluate.judging", config.evaluate.judging if config.evaluate else None),
    )
    for key, judging in sections:
        if judging is not None and judging.verdict_mode == "logprob":
            refs += [(f"{key}.verdict_mode", *ref) for ref in _verdict_references(key, judging)]
    ev = config.evaluate
    if ev is not None and ev.grading_mode == "logprob":
        if ev.grader is not None:
            refs.append(("evaluate.grading_mode", "evaluate.grader", ev.grader))
        elif ev.judging is not None and ev.judging.judges:  # the grader defaults to the first judge
            refs.append(
                ("evaluate.grading_mode", "evaluate.judging.judges.0", ev.judging.judges[0])
            )
    return refs


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader that reads ``1e-2`` as a number and notes every repeated mapping key.

    YAML 1.1 (PyYAML) reads an exponent without a dot (``8e-6``) as a string, where YAML 1.2 and
    every reader of a config mean a number; a repeated key would silently keep its last value.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []  # (line, problem)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_lines:
                first = first_lines[key_node.value]
                self.duplicates.append(
                    (
                        line,
                        f"duplicate key {key_node.value!r} (first at line {first}); merge the "
                        "two, or YAML keeps only the last",
                    )
                )
            first_lines.setdefault(key_node.value, line)
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML the way configs are read: ``1e-2`` is a number, a repeated key is an error.

    Args:
        text: the YAML text.
        source: the file or override it came from, for messages.

    Raises:
        ConfigError: ``<source>:<line>: duplicate key ...`` for every repeated key, or the parse error.
    """
    loader = _ConfigLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: cannot read config: {exc}") from exc
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(
            *(f"{source}:{line}: {problem}" for line, problem in sorted(loader.duplicates))
        )
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> MoaaConfig:
    """Load a YAML config, apply ``dotted.key=value`` overrides and validate it.

    Args:
        path: the YAML file.
        overrides: e.g. ``["generate.sampling.temperature=0.5", "models.a.engine=vllm"]``; values are
            parsed as YAML.

    Returns:
        The validated config.

    Raises:
        ConfigError: listing every problem found, each naming the key and the file or override.
    """
    check = check_config(path, overrides)
    if check.config is None or check.problems:
        raise ConfigError(*check.problems)
    return check.config


@dataclass(frozen=True)
class ConfigCheck:
    """A config as loaded, every problem found in it, and where each key came from."""

    path: Path
    config: MoaaConfig | None  # None when the file cannot be read or the schema rejects it
    problems: list[str]
    sources: dict[str, str]  # dotted key -> the override that set it

    def source(self, key: str) -> str:
        """The override that set ``key`` (or a section around it), else the config file."""
        return _source(key, self.sources, self.path)


def check_config(path: str | Path, overrides: list[str] | None = None) -> ConfigCheck:
    """Load and validate a config, collecting every problem instead of stopping at the first.

    Schema problems (unknown keys, types, bounds) are all listed; the cross-checks that need a valid
    schema (model references, log-prob roles) run when it has none.
    """
    path = Path(path)
    sources: dict[str, str] = {}
    try:
        raw = read_yaml(path.read_text(), str(path)) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        for override in overrides or []:
            sources[_apply_override(raw, override)] = f"override {override!r}"
    except OSError as exc:
        return ConfigCheck(path, None, [f"{path}: cannot read config: {exc}"], sources)
    except ConfigError as exc:
        return ConfigCheck(path, None, exc.problems, sources)
    try:
        config = MoaaConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_schema_problem(error, raw, sources, path) for error in exc.errors()]
        return ConfigCheck(path, None, problems, sources)
    check = ConfigCheck(path, config, [], sources)
    check.problems.extend(_reference_problems(config, check))
    return check


def _schema_problem(error: Any, raw: dict, sources: dict[str, str], path: Path) -> str:
    key = ".".join(str(part) for part in error["loc"])
    return f"{_source(key, sources, path)}: {key}: {_describe(error, raw)}"


def _reference_problems(config: MoaaConfig, check: ConfigCheck) -> list[str]:
    """Model names that are not defined, and engines without log-probabilities asked for them."""
    problems = [
        f"{check.source(key)}: {key}: model {name!r} is not defined under 'models' "
        f"(defined: {sorted(config.models)})"
        for key, name in config.model_references()
        if name not in config.models
    ]
    for mode_key, key, name in _logprob_references(config):
        engine = config.models[name].engine if name in config.models else ""
        if engine in _NO_LOGPROBS:
            problems.append(
                f"{check.source(mode_key)}: {mode_key}: {key} is model {name!r}, a {engine} "
                f"engine: {_NO_LOGPROBS[engine]}; set {mode_key.rpartition('.')[2]}: text"
            )
    return problems


# Engines that cannot give log-probabilities at the verdict or grade position, and why.
_NO_LOGPROBS = {
    "function": "it writes text and has no log-probabilities",
    "openai_http": "a chat endpoint cannot continue an assistant turn that begins 'Verdict: ' "
    "or 'Rating: [[', so its log-probabilities would be of the wrong position",
}


def _source(key: str, sources: dict[str, str], path: Path) -> str:
    for override_key, source in sources.items():
        related = key.startswith(override_key + ".") or override_key.startswith(key + ".")
        if key == override_key or related:
            return source
    return str(path)


def _describe(error: Any, raw: dict) -> str:
    if error["type"] == "extra_forbidden":
        siblings = MoaaConfig
        for part in error["loc"][:-1]:
            siblings = _field_model(siblings, part)
        hint = ""
        if siblings is not None:
            close = difflib.get_close_matches(str(error["loc"][-1]), siblings.model_fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key{hint}"
    if error["type"] == "value_error":  # our own validators say what is wrong
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{error['msg']} (got {error.get('input')!r})"


def _field_model(model: Any, part: Any) -> Any:
    if model is None or isinstance(part, int):
        return model
    field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
    if field is None:  # a dict key (e.g. a model name) or list index
        return ModelConfig if model is MoaaConfig else model
    annotation = field.annotation
    for candidate in getattr(annotation, "__args__", ()) + (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in getattr(candidate, "__args__", ()):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _apply_override(raw: dict, override: str) -> str:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected key=value")
    value = read_yaml(text, f"override {override!r}") if text else ""
    node: Any = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_list_index(part, node, override)]
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    if isinstance(node, list):
        node[_list_index(parts[-1], node, override)] = value
    else:
        node[parts[-1]] = value
    return key


def _list_index(part: str, node: list, override: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(
            f"override {override!r}: {part} is not an index of a {len(node)}-item list"
        )
    return int(part)


def dump_config(config: MoaaConfig) -> dict[str, Any]:
    """The resolved config as plain data (for manifests). Holds no secrets: keys live in env vars."""
    return config.model_dump(mode="json")
