"""The layered MoA graph on Ray Data: one map step per (turn, layer), calling the models' pools.

Row states are :class:`~moaa_ray.core.moa.MoaRow`. In streaming mode every layer is an operator of one
Ray Data pipeline, so all pools work at once; in staged mode each (turn, layer, model) step runs over
the whole dataset with only that model's pool alive, and persists its states. For ``sft_target:
best_of_n`` a last step has the reward model score the last layer's answers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from moaa_ray.config import GenerateConfig
from moaa_ray.core.context import PromptTooLong
from moaa_ray.core.moa import LayerPlan, MoaRow, layer_requests, record_output
from moaa_ray.core.teachers import record_rewards, scoring_requests
from moaa_ray.engines.base import Conversation, SamplingParams
from moaa_ray.pipeline.streaming import StreamStep, stream_states
from moaa_ray.pools.model_pool import SUBMIT_IN_ORDER, ModelPool
from moaa_ray.records import mark_failed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One (turn, layer) of the graph, optionally restricted to one model (staged mode); or, with
    ``scoring``, the reward model ``model`` scoring the last layer's answers, after it."""

    turn: int
    layer: int
    model: str | None = None
    scoring: bool = False


def plan_steps(
    plan: LayerPlan, num_turns: int, staged: bool, reward_model: str | None = None
) -> list[Step]:
    """Steps in dependency order; staged mode splits each layer into one step per distinct model.
    A ``reward_model`` (best_of_n) scores the answers last."""
    steps = []
    for turn in range(num_turns):
        for layer, models in enumerate(plan.layers):
            if staged:
                steps += [Step(turn, layer, m) for m in dict.fromkeys(models)]
            else:
                steps.append(Step(turn, layer))
    if reward_model is not None:
        steps.append(Step(num_turns - 1, len(plan.layers), reward_model, scoring=True))
    return steps


def sampling_for(config: GenerateConfig, step: Step, slot: int) -> SamplingParams:
    """Each (turn, layer, slot) gets its own seed, so one model in two slots gives two samples."""
    s = config.sampling
    seed = s.seed + 10_000 * step.turn + 100 * step.layer + slot
    return SamplingParams(s.temperature, s.top_p, s.max_new_tokens, n=1, seed=seed)


@dataclass(frozen=True)
class LayerStep:
    """Make every call of one (turn, layer) for a batch of rows, all of the layer's models at once."""

    step: Step
    plan: LayerPlan
    pools: dict[str, ModelPool]
    config: GenerateConfig

    def __call__(self, states: list[MoaRow]) -> None:
        step = self.step
        calls: dict[tuple[str, int], list[tuple[int, Conversation]]] = defaultdict(list)
        max_new_tokens = self.config.sampling.max_new_tokens
        for i, state in enumerate(states):
            for slot, model, prompt in layer_requests(
                state,
                self.plan,
                step.turn,
                step.layer,
                self.config.aggregate_template,
                self.config.min_references,
            ):
                if state["error"] is not None or step.model not in (None, model):
                    continue
                try:
                    conversation, cut = self.pools[model].fit(prompt, max_new_tokens)
                except PromptTooLong as exc:  # the user's conversation alone is too long
                    state["error"] = f"turn {step.turn} layer {step.layer + 1}: {model}: {exc}"
                    continue
                state["shortened"] += bool(cut)
                calls[(model, slot)].append((i, conversation))
        with SUBMIT_IN_ORDER:
            submitted = {
                (model, slot): self.pools[model].submit(
                    "chat", [c for _, c in items], sampling_for(self.config, step, slot)
                )
                for (model, slot), items in calls.items()
            }
        for (model, slot), refs in submitted.items():
            completions = self.pools[model].collect(refs)
            for (i, _), completion in zip(calls[(model, slot)], completions, strict=True):
                answer = completion.output[0] if completion.output else None
                text, truncated = (answer.text, answer.truncated) if answer else (None, False)
                record_output(
                    states[i], step.turn, step.layer, slot, model, text, completion.error, truncated
                )


@dataclass(frozen=True)
class ScoreStep:
    """best_of_n: the reward model scores each row's candidate answers (``state["rewards"]``) with
    ``score``, or, an ``hf`` causal LM, with ``answer_logprobs`` (the answer's mean token
    log-probability). A failed call fails the row, for the next run to retry: no made-up reward."""

    pool: ModelPool
    plan: LayerPlan
    keep_truncated: bool

    def __call__(self, states: list[MoaRow]) -> None:
        items: list[Conversation] = []
        owners: list[tuple[MoaRow, int]] = []
        for state in states:
            for slot, conversation in scoring_requests(state, self.plan, self.keep_truncated):
                items.append(conversation)
                owners.append((state, slot))
        if not items:
            return
        method = "answer_logprobs" if self.pool.config.engine == "hf" else "score"
        rewards: dict[str, dict[int, float]] = defaultdict(dict)
        for (state, slot), completion in zip(
            owners, self.pool.collect(self.pool.submit(method, items)), strict=True
        ):
            if completion.output is None:
                mark_failed(state, f"reward model failed: {completion.error}")
            else:
                rewards[state["row_id"]][slot] = float(completion.output)
        for state in states:
            if state["row_id"] in rewards and not state.get("failed"):
                record_rewards(state, self.plan, rewards[state["row_id"]])


def stream(
    states: list[MoaRow],
    steps: list[Step],
    plan: LayerPlan,
    pools: dict[str, ModelPool],
    config: GenerateConfig,
    starting: Callable[[], None] | None = None,
) -> Iterator[list[MoaRow]]:
    """Push row states through the MoA ``steps``; yield finished states per batch (``starting``: as
    :func:`~moaa_ray.pipeline.streaming.stream_states`)."""
    stream_steps = []
    for step in steps:
        if step.scoring:
            pool = pools[str(step.model)]
            keep = config.truncated_answers == "keep"
            stream_steps.append(StreamStep(ScoreStep(pool, plan, keep), "best_of_n", [pool]))
            continue
        layer_pools = [pools[m] for m in dict.fromkeys(plan.layers[step.layer]) if m in pools]
        name = f"moa_turn{step.turn + 1}_layer{step.layer + 1}" + (
            f"_{step.model}" if step.model else ""
        )
        stream_steps.append(StreamStep(LayerStep(step, plan, pools, config), name, layer_pools))
    yield from stream_states(states, stream_steps, config.batch_size, starting)
