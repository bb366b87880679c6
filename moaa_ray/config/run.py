"""A whole run's config: its directory, Ray, the iterations, the models and every stage section,
and the checks across sections (verified benchmarks, SPPO's strengths; model references and the
reward model's engine are :mod:`~moaa_ray.config.loading`'s)."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from moaa_ray.callables import check_callable_spec
from moaa_ray.config.base import Section
from moaa_ray.config.evaluate import EvaluateConfig
from moaa_ray.config.models import ModelConfig
from moaa_ray.config.stages import GenerateConfig, JudgingConfig, PreferencesConfig
from moaa_ray.config.train import DPOConfig, SFTConfig


class RayConfig(Section):
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


class MoaaConfig(Section):
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

    @field_validator("generate")
    @classmethod
    def _best_of_n_model_scores_answers(
        cls, value: GenerateConfig | None, info: ValidationInfo
    ) -> GenerateConfig | None:
        if value is None or value.reward_model is None:
            return value
        model = info.data.get("models", {}).get(value.reward_model)
        if model is not None and model.engine not in ("hf_reward", "hf", "function", "simulated"):
            raise ValueError(
                f"reward_model {value.reward_model!r} has engine {model.engine!r}; best_of_n scores "
                "each answer alone: a reward model (hf_reward, function) or an hf causal LM "
                "(its mean token log-probability)"
            )
        return value

    @field_validator("dpo")
    @classmethod
    def _targets_are_readable(
        cls, value: DPOConfig | None, info: ValidationInfo
    ) -> DPOConfig | None:
        prefs = info.data.get("preferences")
        if value is None or prefs is None:
            return value
        strengths = prefs.win_probability_source() == "strengths"
        counted = prefs.reward == "llm_judges" and prefs.ranking == "wins"
        if value.loss_type == "sppo" and strengths and counted:
            raise ValueError(
                "loss_type 'sppo' with preferences.win_probabilities 'strengths' reads sample "
                "scores as Bradley-Terry strengths, and preferences.ranking 'wins' counts wins: "
                "use ranking bradley_terry or win_probabilities pairwise"
            )
        if value.loss_type == "gpo" and prefs.reward == "llm_judges":
            raise ValueError(
                "loss_type 'gpo' regresses on preference score differences (a pairwise_ranker's "
                "table, or a scalar reward); preferences.reward 'llm_judges' gives verdicts: use "
                "loss_type sppo, whose win rates the verdicts give"
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
        """Every (dotted key, model name) the stage sections run."""
        refs: list[tuple[str, str]] = []
        if self.generate:
            refs += [(f"generate.proposers.{i}", m) for i, m in enumerate(self.generate.proposers)]
            refs += [
                (f"generate.layer_proposers.{i}.{j}", m)
                for i, layer in enumerate(self.generate.layer_proposers or [])
                for j, m in enumerate(layer)
            ]
            gen = self.generate
            run = {  # a proposer sft_target runs no aggregator
                "aggregator": gen.aggregator if gen.sft_target == "aggregator" else None,
                "reward_model": gen.reward_model,
            }
            refs += [(f"generate.{role}", name) for role, name in run.items() if name is not None]
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

    def logprob_references(self) -> list[tuple[str, str, str]]:
        """(mode key, dotted key, model name) of every role read by log-probabilities, not text."""
        refs: list[tuple[str, str, str]] = []
        sections = (
            ("preferences.judging", self.preferences.judging if self.preferences else None),
            ("evaluate.judging", self.evaluate.judging if self.evaluate else None),
        )
        for key, judging in sections:
            if judging is not None and judging.verdict_mode == "logprob":
                refs += [(f"{key}.verdict_mode", *ref) for ref in _verdict_references(key, judging)]
        ev = self.evaluate
        if ev is not None and ev.grading_mode == "logprob":
            if ev.grader is not None:
                refs.append(("evaluate.grading_mode", "evaluate.grader", ev.grader))
            elif ev.judging is not None and ev.judging.judges:
                # the grader defaults to the first judge
                refs.append(
                    ("evaluate.grading_mode", "evaluate.judging.judges.0", ev.judging.judges[0])
                )
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
