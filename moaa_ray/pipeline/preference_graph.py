"""Ray Data steps of the preference stage: sample, select criteria, judge, aggregate, or reward-score.

Each step is a picklable callable over a batch of tournament states (:mod:`moaa_ray.core.tournament`)
that submits all of its engine calls before collecting any, so every pool involved works at once.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from moaa_ray.config import JudgingConfig, SamplingConfig
from moaa_ray.core.context import Prompt, PromptTooLong
from moaa_ray.core.criteria import Criterion, render_criteria_prompt, select_criteria_or_default
from moaa_ray.core.judging import render_judge_prompt, verdict_from_logprobs
from moaa_ray.core.pairing import anchor_pairs, round_robin_pairs
from moaa_ray.core.tournament import (
    AGGREGATOR,
    VerdictRules,
    aggregator_requests,
    judge_requests,
    record_judgment,
    record_samples,
    shown,
)
from moaa_ray.engines.base import SamplingParams
from moaa_ray.pools.dispatch import Completion
from moaa_ray.pools.model_pool import SUBMIT_IN_ORDER, ModelPool
from moaa_ray.records import mark_failed

VERDICT_PREFIX = "Verdict: "  # logprob verdicts: the choices "A" and "B" continue it
LOGPROB_REPLY_TOKENS = 8  # room a logprob verdict needs after the prompt: the prefix and a choice


def fit_prompt(pool: ModelPool, state: dict, prompt: Prompt, reply_tokens: int) -> list | None:
    """The prompt fitted to the pool's context window beside ``reply_tokens``, or None.

    A prompt whose parts were cut is counted in ``state["counts"]["shortened_prompts"]``; one that
    cannot fit rejects its row (``state["error"]``, not a failure: a rerun would not fit it either).
    A row already in error gets None.
    """
    if state["error"]:
        return None
    try:
        conversation, cut = pool.fit(prompt, reply_tokens)
    except PromptTooLong as exc:
        state["error"] = f"{pool.name}'s context window: {exc}"
        return None
    state["counts"]["shortened_prompts"] += bool(cut)
    return conversation


def reply_tokens(judging: JudgingConfig) -> int:
    """Tokens a judge's reply needs beside its prompt."""
    return (
        judging.sampling.max_new_tokens if judging.verdict_mode == "text" else LOGPROB_REPLY_TOKENS
    )


def verdict_rules(judging: JudgingConfig | None) -> VerdictRules:
    """How the stage turns its judgments into pair scores, from its judging config."""
    if judging is None:  # reward models score samples directly
        return VerdictRules()
    return VerdictRules(
        aggregator=judging.aggregator_judge is not None,
        order_policy=judging.order_policy,
        aggregator_fallback=judging.aggregator_fallback,
    )


def pairs_for(state: dict, pairing: str) -> list[tuple[int, int]]:
    """The pairs judged for a row's (deduplicated) samples."""
    k = len(state["samples"])
    if k < 2:
        return []
    return round_robin_pairs(k) if pairing == "round_robin" else anchor_pairs(k)


def _params(sampling: SamplingConfig, n: int = 1, salt: str = "") -> SamplingParams:
    seed = sampling.seed + zlib.crc32(salt.encode()) % 100_000
    return SamplingParams(sampling.temperature, sampling.top_p, sampling.max_new_tokens, n, seed)


@dataclass(frozen=True)
class SampleStep:
    """K on-policy answers per prompt from the policy pool; answers cut at ``max_new_tokens`` are
    counted and, unless ``keep_truncated``, neither judged nor used as DPO samples."""

    pool: ModelPool
    num_samples: int
    sampling: SamplingConfig
    keep_truncated: bool = False

    def __call__(self, states: list[dict]) -> None:
        params = _params(self.sampling, n=self.num_samples)
        prompts = [(s, fit_prompt(self.pool, s, Prompt.fixed(s["prompt"]), params.max_new_tokens))
                   for s in states]  # fmt: skip
        live = [(s, p) for s, p in prompts if p is not None]
        completions = self.pool.chat([p for _, p in live], params)
        for (state, _), completion in zip(live, completions, strict=True):
            if completion.output is None:
                mark_failed(state, f"sampling failed: {completion.error}")
                continue
            kept = [a.text for a in completion.output if self.keep_truncated or not a.truncated]
            state["counts"]["truncated_samples"] += len(completion.output) - len(kept)
            record_samples(state, kept)


@dataclass(frozen=True)
class CriteriaStep:
    """Dynamic criteria filtering: the selector picks the k most relevant criteria per prompt."""

    pool: ModelPool | None
    criteria: tuple[Criterion, ...]
    judging: JudgingConfig

    def __call__(self, states: list[dict]) -> None:
        live = [s for s in states if not s["error"]]
        k, default = self.judging.num_criteria, self.judging.default_criteria
        if self.pool is None:
            for state in live:
                state["criteria"] = list(default)
            return
        params = _params(self.judging.sampling)
        asked = []
        for state in live:
            prompt = Prompt.fixed(render_criteria_prompt(state["prompt"], list(self.criteria), k))
            try:
                asked.append((state, self.pool.fit(prompt, params.max_new_tokens)[0]))
            except PromptTooLong:  # too long for the selector's window: the default criteria
                state["criteria"] = list(default)
                state["counts"]["criteria_fallback"] += 1
        completions = self.pool.chat([p for _, p in asked], params)
        for (state, _), completion in zip(asked, completions, strict=True):
            if completion.output is None:
                mark_failed(state, f"criteria selection failed: {completion.error}")
                continue
            text = completion.output[0].text
            names, fell_back = select_criteria_or_default(text, list(self.criteria), k, default)
            state["criteria"] = names
            state["counts"]["criteria_fallback"] += int(fell_back)


def _call_judges(
    pools: dict[str, ModelPool], requests: list[tuple[str, list]], judging: JudgingConfig
) -> list[Completion]:
    """Submit (judge, conversation) requests to each judge's pool; results in request order."""
    by_judge: dict[str, list[int]] = {}
    for index, (judge, _) in enumerate(requests):
        by_judge.setdefault(judge, []).append(index)
    submitted = {}
    with SUBMIT_IN_ORDER:
        for judge, indices in by_judge.items():
            conversations = [requests[i][1] for i in indices]
            if judging.verdict_mode == "logprob":
                args: tuple = ("choice_logprobs", conversations, VERDICT_PREFIX, ["A", "B"])
            else:
                args = ("chat", conversations, _params(judging.sampling, salt=judge))
            submitted[judge] = pools[judge].submit(*args)
    results: list[Completion] = [Completion(None)] * len(requests)
    for judge, refs in submitted.items():
        for index, completion in zip(by_judge[judge], pools[judge].collect(refs), strict=True):
            results[index] = completion
    return results


def _record(
    state: dict, judge: str, pair, order: str, completion: Completion, judging: JudgingConfig
) -> None:
    if completion.output is None:  # a failed call is no abstain: the row waits for the next run
        mark_failed(state, f"judge {judge} failed: {completion.error}")
    elif judging.verdict_mode == "logprob":
        p_a = verdict_from_logprobs(*completion.output)
        record_judgment(state, judge, pair, order, p_a=p_a, tie_band=judging.tie_band)
    else:
        record_judgment(state, judge, pair, order, text=completion.output[0].text)


@dataclass(frozen=True)
class JudgeStep:
    """Every judge compares every pair in both orders."""

    pools: dict[str, ModelPool]
    judging: JudgingConfig
    pairing: str

    def __call__(self, states: list[dict]) -> None:
        calls = []
        room = reply_tokens(self.judging)
        for state in states:
            requests = judge_requests(state, pairs_for(state, self.pairing), self.judging.judges)
            for judge, pair, order, prompt in requests:
                conversation = fit_prompt(self.pools[judge], state, prompt, room)
                if conversation is not None:
                    calls.append((state, judge, pair, order, conversation))
        completions = _call_judges(self.pools, [(c[1], c[4]) for c in calls], self.judging)
        for (state, judge, pair, order, _), completion in zip(calls, completions, strict=True):
            _record(state, judge, pair, order, completion, self.judging)


@dataclass(frozen=True)
class AggregateStep:
    """The aggregator judge reads the judges' evaluations and gives the final verdict per order."""

    pool: ModelPool
    judging: JudgingConfig
    pairing: str

    def __call__(self, states: list[dict]) -> None:
        calls = []
        room = reply_tokens(self.judging)
        for state in states:
            for pair, order, prompt in aggregator_requests(state, pairs_for(state, self.pairing)):
                conversation = fit_prompt(self.pool, state, prompt, room)
                if conversation is not None:
                    calls.append((state, pair, order, conversation))
        pools = {AGGREGATOR: self.pool}
        completions = _call_judges(pools, [(AGGREGATOR, c[3]) for c in calls], self.judging)
        for (state, pair, order, _), completion in zip(calls, completions, strict=True):
            _record(state, AGGREGATOR, pair, order, completion, self.judging)


@dataclass(frozen=True)
class RewardModelStep:
    """Reward-model scores of a prompt's samples (``state["rewards"]``).

    Scalar RM: each sample's score. Likelihood: each sample's mean token log-probability under
    the model (``answer_logprobs``). Pairwise ranker: every pair of samples in both orders, and a
    sample's reward is llm-blender's ranking score (``max_logits``): over all K samples (itself
    counting 0), the mean of its logit of beating the other minus the other's logit of beating it.
    A ``pairrm`` engine compares (prompt, answer 1, answer 2) (``compare``); another engine scores
    the judge prompt that shows the pair as Answer A and Answer B (``score``).
    """

    pool: ModelPool
    kind: str  # "scalar_rm", "likelihood" or "pairwise_ranker"
    criteria: tuple[str, ...]  # shown to a pairwise ranker that reads the judge prompt

    def __call__(self, states: list[dict]) -> None:
        live = [s for s in states if not s["error"]]
        compares = self.kind == "pairwise_ranker" and self.pool.config.engine == "pairrm"
        items: list = []
        owners: list[tuple[dict, int, int | None]] = []
        for state in live:
            if self.kind != "pairwise_ranker":  # one score per sample
                for i, sample in enumerate(state["samples"]):
                    items.append(state["prompt"] + [{"role": "assistant", "content": sample}])
                    owners.append((state, i, None))
                continue
            for x, y in round_robin_pairs(len(state["samples"])):
                for first, second in ((x, y), (y, x)):
                    a, b = shown(state, (first, second), "ab")
                    if compares:
                        items.append((state["prompt"], a, b))
                    else:
                        items.append(render_judge_prompt(state["prompt"], a, b, self.criteria))
                    owners.append((state, first, second))
        method = "compare" if compares else "score"
        if self.kind == "likelihood":
            method = "answer_logprobs"
        completions = self.pool.collect(self.pool.submit(method, items))
        totals: dict[int, list[float]] = {}
        for (state, i, j), completion in zip(owners, completions, strict=True):
            if completion.output is None:  # never a made-up 0.0 reward
                mark_failed(state, f"reward model failed: {completion.error}")
                continue
            rewards = totals.setdefault(id(state), [0.0] * len(state["samples"]))
            rewards[i] += completion.output
            if j is not None:
                rewards[j] -= completion.output
        for state in live:
            if state.get("failed"):
                continue
            k = len(state["samples"])
            scale = k if self.kind == "pairwise_ranker" else 1
            state["rewards"] = [r / scale for r in totals.get(id(state), [0.0] * k)]
