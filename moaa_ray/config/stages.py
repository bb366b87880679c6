"""The data stages' sections: prompt inputs and sampling, ``generate`` (MoA answers),
``judging`` (the judge ensemble, also used by evaluation) and ``preferences`` (ranked samples)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from moaa_ray.config.base import OPERATIONAL, Section


class InputConfig(Section):
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


class SamplingConfig(Section):
    """Sampling for one engine call."""

    temperature: float = Field(0.7, ge=0, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass, in (0, 1]")
    max_new_tokens: int = Field(2048, ge=1, description="longest answer, in tokens")
    seed: int = Field(0, description="random seed of the engine calls")


class GenerateConfig(Section):
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
    aggregator: str | None = Field(
        None,
        description="model name of the last layer; needed by sft_target aggregator, not run by "
        "the others",
    )
    num_layers: int = Field(2, ge=2, description="proposer layers + the aggregator layer")
    sft_target: Literal["aggregator", "random_proposer", "all_proposers", "best_of_n"] = Field(
        "aggregator",
        description="each SFT row's answer (MoAA's SFT-data ablation): the aggregator's (MoAA); "
        "random_proposer: one proposer's, drawn per row by teacher_seed (Random Teacher); "
        "all_proposers: every proposer's, one row each, id <row_id>#<slot>-<model> (Combined "
        "Teacher); best_of_n: the one reward_model scores best. A proposer here is a slot of the "
        "last proposer layer (with num_layers > 2, those that read the earlier layers' answers); "
        "proposer targets run no aggregator and take single-turn prompts only",
    )
    reward_model: str | None = Field(
        None,
        description="best_of_n only: the model that scores the proposers' answers (a reward "
        "model's score; an hf causal LM's mean token log-probability)",
    )
    teacher_seed: int = Field(
        0, description="random_proposer: seed of each row's draw, made with its row id"
    )
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
    def _sft_target_has_its_models(self) -> GenerateConfig:
        if self.sft_target == "aggregator" and self.aggregator is None:
            raise ValueError("sft_target 'aggregator' needs 'aggregator' (a model name)")
        if self.sft_target == "best_of_n" and self.reward_model is None:
            raise ValueError("sft_target 'best_of_n' needs 'reward_model' (a model name)")
        if self.sft_target != "best_of_n" and self.reward_model is not None:
            raise ValueError(
                f"'reward_model' is read by sft_target best_of_n only; sft_target is "
                f"{self.sft_target!r}"
            )
        return self

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


class JudgingConfig(Section):
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
        "(one order alone may be position bias); average = the missing order counts as a tie; any = that order decides",
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


class PreferencesConfig(Section):
    """On-policy samples ranked by a reward source into DPO pairs (MoAA, arXiv 2505.03059)."""

    inputs: list[InputConfig] = Field(description="preference prompt sources, concatenated")
    policy: str = Field(description="model name that samples (in `moaa run`: the SFT model)")
    num_samples: int = Field(5, ge=2, description="K answers per prompt")
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=1024)
    reward: Literal["llm_judges", "scalar_rm", "pairwise_ranker", "likelihood"] = Field(
        "llm_judges",
        description="llm_judges: the judging ensemble; scalar_rm: a reward model scores each "
        "sample; pairwise_ranker: a pairwise engine (pairrm) compares every pair of samples; "
        "likelihood: each sample's mean token log-probability under reward_model (an hf causal "
        "LM, e.g. the policy: its own confidence)",
    )
    judging: JudgingConfig | None = Field(None, description="the ensemble, for reward llm_judges")
    reward_model: str | None = Field(
        None, description="scalar_rm / pairwise_ranker / likelihood model name"
    )
    pairing: Literal["round_robin", "anchor"] = Field("round_robin", description="pairs judged")
    ranking: Literal["bradley_terry", "wins"] = Field("bradley_terry", description="sample scores")
    min_margin: float = Field(0.0, ge=0, description="best - worst score must exceed this")
    win_probabilities: Literal["pairwise", "strengths"] | None = Field(
        None,
        description="the K x K win probabilities written with each pair (SPPO's targets). "
        "pairwise: from the reward model's pairwise table or the judges' verdicts on each pair "
        "(SPPO-GPM's scripts; a non-transitive preference survives); strengths: sigmoid of the "
        "samples' score differences (SPPO's compute_prob.py on PairRM's scores); None: pairwise "
        "for llm_judges and pairwise_ranker, strengths for scalar_rm and likelihood",
    )
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
        if self.win_probabilities == "pairwise" and not self.compares_pairs():
            raise ValueError(
                f"win_probabilities 'pairwise' needs a pairwise source; reward {self.reward!r} "
                "scores each sample alone: use strengths"
            )
        return self

    def compares_pairs(self) -> bool:
        """Whether the reward source judges pairs of samples (rather than scoring each alone)."""
        return self.reward in ("llm_judges", "pairwise_ranker")

    def win_probability_source(self) -> Literal["pairwise", "strengths"]:
        """Where the pairs' win probabilities come from (``win_probabilities``, or its default)."""
        if self.win_probabilities is not None:
            return self.win_probabilities
        return "pairwise" if self.compares_pairs() else "strengths"
