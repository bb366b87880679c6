"""The layered MoA graph on Ray Data: one map step per (turn, layer), calling the models' pools.

Rows travel as ``{"row_id", "state"}`` with the state as JSON (see :mod:`moaa_ray.core.moa`), which keeps
Arrow schemas stable however many references or turns a row has. In streaming mode every layer is an
operator of one Ray Data pipeline, so all pools work at once; in staged mode each (turn, layer, model)
step runs over the whole dataset with only that model's pool alive, and persists its states.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import ray

from moaa_ray.config import GenerateConfig
from moaa_ray.core.moa import LayerPlan, layer_requests, record_output
from moaa_ray.engines.base import SamplingParams
from moaa_ray.pipeline.pools import ModelPool

logger = logging.getLogger(__name__)
STEP_NUM_CPUS = 0.1  # steps only wait on engine actors


@dataclass(frozen=True)
class Step:
    """One (turn, layer) of the graph, optionally restricted to one model (staged mode)."""

    turn: int
    layer: int
    model: str | None = None


def plan_steps(plan: LayerPlan, num_turns: int, staged: bool) -> list[Step]:
    """Steps in dependency order; staged mode splits each layer into one step per distinct model."""
    steps = []
    for turn in range(num_turns):
        for layer, models in enumerate(plan.layers):
            if staged:
                steps += [Step(turn, layer, m) for m in dict.fromkeys(models)]
            else:
                steps.append(Step(turn, layer))
    return steps


def sampling_for(config: GenerateConfig, step: Step, slot: int) -> SamplingParams:
    """Each (turn, layer, slot) gets its own seed, so one model in two slots gives two samples."""
    s = config.sampling
    seed = s.seed + 10_000 * step.turn + 100 * step.layer + slot
    return SamplingParams(s.temperature, s.top_p, s.max_new_tokens, n=1, seed=seed)


def run_step(
    batch: dict[str, np.ndarray],
    *,
    step: Step,
    plan: LayerPlan,
    pools: dict[str, ModelPool],
    config: GenerateConfig,
) -> dict[str, np.ndarray]:
    """Ray Data batch function: make every call of one step for a batch of rows, all models at once."""
    states = [json.loads(s) for s in batch["state"]]
    calls: dict[tuple[str, int], list[tuple[int, list]]] = defaultdict(list)
    for i, state in enumerate(states):
        for slot, model, conversation in layer_requests(
            state, plan, step.turn, step.layer, config.aggregate_template
        ):
            if step.model is None or model == step.model:
                calls[(model, slot)].append((i, conversation))
    submitted = {
        key: pools[key[0]].submit("chat", [c for _, c in items], sampling_for(config, step, key[1]))
        for key, items in calls.items()
    }
    for (model, slot), refs in submitted.items():
        completions = pools[model].collect(refs)
        for (i, _), completion in zip(calls[(model, slot)], completions, strict=True):
            text = completion.texts[0] if completion.texts else None
            record_output(states[i], step.turn, step.layer, slot, model, text, completion.error)
    return {"row_id": batch["row_id"], "state": np.array([json.dumps(s) for s in states])}


def stream(
    states: list[dict],
    steps: list[Step],
    plan: LayerPlan,
    pools: dict[str, ModelPool],
    config: GenerateConfig,
) -> Iterator[list[dict]]:
    """Push row states through ``steps`` as one Ray Data pipeline; yield finished states per batch."""
    items = [{"row_id": s["row_id"], "state": json.dumps(s)} for s in states]
    num_blocks = max(1, min(-(-len(items) // config.batch_size), 2000))  # one block per batch
    dataset = ray.data.from_items(items, override_num_blocks=num_blocks)
    for step in steps:
        layer_models = set(plan.layers[step.layer])
        replicas = sum(p.config.num_replicas[1] for m, p in pools.items() if m in layer_models)
        dataset = dataset.map_batches(
            run_step,
            fn_kwargs={"step": step, "plan": plan, "pools": pools, "config": config},
            batch_size=config.batch_size,
            batch_format="numpy",
            num_cpus=STEP_NUM_CPUS,
            concurrency=max(2, 2 * replicas),
        )
    for batch in dataset.iter_batches(batch_size=config.batch_size, batch_format="numpy"):
        yield [json.loads(s) for s in batch["state"]]
