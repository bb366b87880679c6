"""Judging shared by the preference and evaluation stages: criteria selection, the judges (both
orders of every pair) and the aggregator judge as Ray Data steps, with the rules that turn their
verdicts into scores and the judgment audit table's rows.

Each step is a picklable callable over a batch of tournament states
(:class:`~moaa_ray.core.tournament.Tournament`) that submits all of its engine calls before
collecting any, so every pool involved works at once.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from moaa_ray.config import JudgingConfig, SamplingConfig
from moaa_ray.core.context import Prompt, PromptTooLong
from moaa_ray.core.criteria import (
    Criterion,
    load_criteria,
    render_criteria_prompt,
    select_criteria_or_default,
)
from moaa_ray.core.judging import verdict_from_logprobs
from moaa_ray.core.pairing import anchor_pairs, round_robin_pairs
from moaa_ray.core.tournament import (
    AGGREGATOR,
    Judgment,
    Order,
    Pair,
    Tournament,
    VerdictRules,
    aggregator_requests,
    judge_requests,
    record_judgment,
)
from moaa_ray.engines.base import Conversation, SamplingParams
from moaa_ray.pipeline.streaming import StreamStep
from moaa_ray.pools.dispatch import Completion
from moaa_ray.pools.model_pool import SUBMIT_IN_ORDER, ModelPool
from moaa_ray.records import mark_failed

VERDICT_PREFIX = "Verdict: "  # logprob verdicts: the choices "A" and "B" continue it
LOGPROB_REPLY_TOKENS = 8  # room a logprob verdict needs after the prompt: the prefix and a choice


def fit_prompt(
    pool: ModelPool, state: Tournament, prompt: Prompt, reply_tokens: int
) -> Conversation | None:
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


def pairs_for(state: Tournament, pairing: str) -> list[Pair]:
    """The pairs judged for a row's (deduplicated) samples."""
    return sample_pairs(len(state["samples"]), pairing)


def sample_pairs(k: int, pairing: str) -> list[Pair]:
    """The pairs judged among ``k`` samples."""
    if k < 2:
        return []
    return round_robin_pairs(k) if pairing == "round_robin" else anchor_pairs(k)


def seeded_params(sampling: SamplingConfig, n: int = 1, salt: str = "") -> SamplingParams:
    """Sampling parameters of ``sampling``, ``n`` answers a prompt, the seed offset by ``salt``."""
    seed = sampling.seed + zlib.crc32(salt.encode()) % 100_000
    return SamplingParams(sampling.temperature, sampling.top_p, sampling.max_new_tokens, n, seed)


@dataclass(frozen=True)
class CriteriaStep:
    """Dynamic criteria filtering: the selector picks the k most relevant criteria per prompt."""

    pool: ModelPool | None
    criteria: tuple[Criterion, ...]
    judging: JudgingConfig

    def __call__(self, states: list[Tournament]) -> None:
        live = [s for s in states if not s["error"]]
        k, default = self.judging.num_criteria, self.judging.default_criteria
        if self.pool is None:
            for state in live:
                state["criteria"] = list(default)
            return
        params = seeded_params(self.judging.sampling)
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
    pools: dict[str, ModelPool], requests: list[tuple[str, Conversation]], judging: JudgingConfig
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
                args = ("chat", conversations, seeded_params(judging.sampling, salt=judge))
            submitted[judge] = pools[judge].submit(*args)
    results: list[Completion] = [Completion(None)] * len(requests)
    for judge, refs in submitted.items():
        for index, completion in zip(by_judge[judge], pools[judge].collect(refs), strict=True):
            results[index] = completion
    return results


def _record(
    state: Tournament,
    judge: str,
    pair: Pair,
    order: Order,
    completion: Completion,
    judging: JudgingConfig,
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

    def __call__(self, states: list[Tournament]) -> None:
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

    def __call__(self, states: list[Tournament]) -> None:
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


def judging_steps(
    pools: dict[str, ModelPool], judging: JudgingConfig, pairing: str
) -> list[StreamStep[Tournament]]:
    """Criteria selection, the judges (both orders) and the aggregator judge, as stream steps."""
    criteria = tuple(load_criteria(judging.criteria_file))
    selector = pools[judging.criteria_selector] if judging.criteria_selector else None
    steps = [
        StreamStep(
            CriteriaStep(selector, criteria, judging),
            "select_criteria",
            [selector] if selector else [],
        ),
        StreamStep(
            JudgeStep(pools, judging, pairing),
            "judges",
            [pools[j] for j in dict.fromkeys(judging.judges)],
        ),
    ]
    if judging.aggregator_judge:
        aggregator = pools[judging.aggregator_judge]
        aggregate = AggregateStep(aggregator, judging, pairing)
        steps.append(StreamStep(aggregate, "aggregate_judges", [aggregator]))
    return steps


def audit_row(state: Tournament, judgment: Judgment) -> dict[str, Any]:
    """One row of the judgment audit table."""
    return {
        "row_id": state["row_id"],
        "judge": judgment["judge"],
        "sample_x": judgment["pair"][0],
        "sample_y": judgment["pair"][1],
        "order": judgment["order"],
        "criteria": state["criteria"],
        "verdict": judgment["verdict"],
        "p_a": judgment["p_a"],
        "raw": judgment["raw"],
    }
