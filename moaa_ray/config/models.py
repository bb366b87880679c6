"""The ``models`` section: each model, the engine that runs it and the Ray actor pool that serves it.

A model's path is checked when it is loaded: tiny model names against :mod:`moaa_ray.tiny_catalog`
(which builds nothing), real ones against :mod:`moaa_ray.real_models`, local directories on disk,
and a function engine's ``package.module:function`` by its form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from moaa_ray.callables import check_callable_spec
from moaa_ray.config.base import OPERATIONAL, Section, check_min_max
from moaa_ray.real_models import REAL_PREFIX, check_real_model
from moaa_ray.tiny_catalog import KNOWN_MODELS, TINY_PREFIX


class SimulatedConfig(Section):
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


class PairRMConfig(Section):
    """The ``pairrm`` engine's source: the text PairRM reads as the request its two answers reply to."""

    source_format: Literal["llm_blender", "chat_template"] = Field(
        "llm_blender",
        description="llm_blender: as llm-blender's Blender builds it (llm_blender/blender/"
        "blender.py): a one-turn request's text (rank, compare), a longer conversation laid out "
        "as compare_conversations does, its earlier answers in each candidate; chat_template: "
        "the conversation rendered by chat_template_tokenizer's chat template up to the answer, "
        "as SPPO's scripts/rank.py gives PairRM the policy's prompt",
    )
    chat_template_tokenizer: str | None = Field(
        None,
        description="source_format chat_template: the tokenizer whose chat template renders the "
        "source (a path as models.<name>.path takes; SPPO's: the policy's)",
    )

    @model_validator(mode="after")
    def _tokenizer_for_chat_template(self) -> PairRMConfig:
        templated = self.source_format == "chat_template"
        if templated and self.chat_template_tokenizer is None:
            raise ValueError("source_format chat_template needs chat_template_tokenizer")
        if not templated and self.chat_template_tokenizer is not None:
            raise ValueError(
                "chat_template_tokenizer is read only with source_format chat_template"
            )
        if self.chat_template_tokenizer is not None:
            _check_model_path(self.chat_template_tokenizer)
        return self


# Engines that score answers against each other (pairrm's ``compare``, gpm's ``preference_table``)
# rather than one alone: preferences.reward pairwise_ranker needs one, scalar_rm refuses one.
PAIRWISE_ENGINES = frozenset({"pairrm", "gpm"})
# ModelConfig keys that only one engine reads, and that engine.
ENGINE_SETTINGS = {"simulated": "simulated", "pairrm": "pairrm", "reward_head": "hf_reward"}

# Conversations a replica's engine works on at once, where 16 would leave it half empty: hf batches
# 64 about as fast per step as 16, and vLLM keeps up to 256 sequences in its running batch.
ENGINE_BATCH_SIZES = {"hf": 64, "vllm": 256}


class ModelConfig(Section):
    """One model and the Ray actor pool that serves it."""

    engine: Literal[
        "hf", "vllm", "openai_http", "hf_reward", "pairrm", "gpm", "simulated", "function"
    ] = Field(
        "hf",
        description="inference backend; hf_reward: a sequence-classification reward model; "
        "pairrm: a PairRM pairwise ranker (llm-blender/PairRM-hf checkpoint format); gpm: a General "
        "Preference Model ranking a prompt's samples (general-preference/GPM-* checkpoint format); "
        "simulated: no model, for tests and benchmarks; function: the Python function named by "
        "path writes the answers or scores (e.g. a task's programmatic judge or verifier)",
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
        description="conversations a replica's engine works on at once (gpm: prompts, each with its "
        "samples): merged into one batch (hf, reward models), or running in its continuous batch "
        "(vllm); unset: 64 for hf, 256 for vllm",
        json_schema_extra=OPERATIONAL,
    )
    trust_remote_code: bool = Field(False, description="run code shipped with the model")
    max_model_len: int | None = Field(
        None,
        ge=2,
        description="context window in tokens that prompts are fitted to (hf and vllm: given to "
        "vLLM too); None: vLLM's engine_kwargs.max_model_len, else the model config's",
    )
    dtype: str = Field(
        "auto",
        description="torch dtype name; auto = bf16 on GPU (pairrm: fp16, as llm-blender loads "
        "PairRM), fp32 on CPU",
    )
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
    reward_head: Literal["logits", "score"] = Field(
        "logits",
        description="hf_reward: where the model's output holds the reward: logits (transformers' "
        "one-label sequence-classification head, logits[:, 0]) or score (a custom model's "
        "output.score, as ArmoRM's card reads it)",
    )
    pairrm: PairRMConfig = Field(PairRMConfig(), description="settings of the pairrm engine")
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

    @model_validator(mode="after")
    def _engine_settings_fit_the_engine(self) -> ModelConfig:
        """A reward head or PairRM source set away from its default on a model of another engine,
        which would ignore it. (A resolved config, which lists every default, loads again.)"""
        for key in ("reward_head", "pairrm"):
            engine = ENGINE_SETTINGS[key]
            if self.engine != engine and getattr(self, key) != type(self).model_fields[key].default:
                raise ValueError(
                    f"{key} is read by engine {engine} only; this model's engine is {self.engine}"
                )
        return self

    @field_validator("num_replicas")
    @classmethod
    def _min_max(cls, value: list[int]) -> list[int]:
        return check_min_max(value)

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
