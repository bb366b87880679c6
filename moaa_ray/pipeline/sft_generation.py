"""The MoA SFT-data stage: prompts in, aggregated answers out as a TRL conversational dataset."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from moaa_ray.config import GenerateConfig, MoaaConfig, dump_config
from moaa_ray.core.moa import LayerPlan, finish_row, plan_layers
from moaa_ray.pipeline.cluster import connect
from moaa_ray.pipeline.inputs import Reject, fingerprint_input, load_states
from moaa_ray.pipeline.metrics import count_rows
from moaa_ray.pipeline.moa_graph import Step, plan_steps, stream
from moaa_ray.pipeline.pools import ModelPool, start_pool, stop_pool
from moaa_ray.pipeline.runs import RunDir, StageDir
from moaa_ray.records import sft_schema

logger = logging.getLogger(__name__)
STAGE = "sft_data"


def generate_sft(config: MoaaConfig, run_dir: str | Path) -> dict:
    """Write the MoA SFT dataset into ``<run_dir>/sft_data``; a rerun resumes where it stopped.

    Returns:
        Counts: rows written in total and this run, rows rejected, proposer answers dropped.
    """
    gen = _require_section(config)
    started = time.monotonic()
    # 1. Plan the MoA layers and open the run directory.
    plan = plan_layers(gen.proposers, gen.aggregator, gen.num_layers)
    run = RunDir(run_dir)
    run.record_start(
        dump_config(config),
        {f"generate.inputs.{i}": fingerprint_input(c) for i, c in enumerate(gen.inputs)},
    )
    stage = run.stage(STAGE)
    # 2. Read and validate prompts; bad rows become rejects, the run goes on.
    states, rejects = load_states(gen.inputs)
    # 3. Resume: skip rows already written.
    done = stage.done_ids()
    todo = [s for s in states if s["row_id"] not in done]
    run.update_stage(STAGE, status="running", rows_total=len(states), rows_done_before=len(done))
    logger.info("%d rows valid, %d already done, %d to generate", len(states), len(done), len(todo))
    # 4. Run the MoA graph and write finished rows shard by shard.
    counts = {"rows_written": 0, "rows_failed": 0, "dropped_references": 0}
    if todo:
        connect(config)
        num_turns = max(len(s["targets"]) for s in todo)
        run_graph = _run_staged if gen.mode == "staged" else _run_streaming
        for batch in run_graph(config, gen, plan, todo, num_turns, stage):
            _write_batch(stage, batch, plan, gen, rejects, counts)
    # 5. Record rejects and stage status.
    stage.write_rejects(rejects)
    summary = {
        **counts,
        "rows_total": len(stage.done_ids()),
        "rows_rejected": len(rejects),
        "seconds": round(time.monotonic() - started, 1),
    }
    run.update_stage(STAGE, status="done" if not counts["rows_failed"] else "partial", **summary)
    return summary


def _require_section(config: MoaaConfig) -> GenerateConfig:
    if config.generate is None:
        raise ValueError("config has no 'generate' section")
    return config.generate


def _write_batch(stage: StageDir, states, plan, gen, rejects: list, counts: dict) -> None:
    sampling = json.dumps(gen.sampling.model_dump())
    rows = []
    for state in states:
        try:
            row = finish_row(state, plan)
        except ValueError as exc:
            rejects.append(
                Reject(state["source"], -1, f"generation failed: {exc}", state["row_id"])
            )
            counts["rows_failed"] += 1
            continue
        rows.append({**row, "sampling": sampling})
        counts["dropped_references"] += row["dropped_references"]
    stage.write_shard(rows, sft_schema())
    counts["rows_written"] += len(rows)
    count_rows(STAGE, written=len(rows), rejected=len(states) - len(rows))


def _start_pools(config: MoaaConfig, names) -> dict[str, ModelPool]:
    return {name: start_pool(name, config.models[name]) for name in names}


def _run_streaming(
    config: MoaaConfig, gen: GenerateConfig, plan: LayerPlan, todo, num_turns, stage
):
    pools = _start_pools(config, plan.models)
    try:
        yield from stream(todo, plan_steps(plan, num_turns, staged=False), plan, pools, gen)
    finally:
        for pool in pools.values():
            stop_pool(pool)


def _run_staged(config: MoaaConfig, gen: GenerateConfig, plan: LayerPlan, todo, num_turns, stage):
    """One model on the cluster at a time; each step's states persist, so a rerun skips done steps."""
    import pyarrow as pa

    schema = pa.schema([("row_id", pa.string()), ("state", pa.string())])
    states = todo
    pool: ModelPool | None = None
    try:
        for index, step in enumerate(plan_steps(plan, num_turns, staged=True)):
            step_dir = StageDir(stage.path / "_staged" / f"step-{index:03d}")
            ids = {s["row_id"] for s in states}
            done = {
                r["row_id"]: json.loads(r["state"])
                for r in _read_rows(step_dir)
                if r["row_id"] in ids
            }
            missing = [s for s in states if s["row_id"] not in done]
            model = str(step.model)
            if missing:
                if pool is None or pool.name != model:
                    if pool is not None:
                        stop_pool(pool)
                    pool = start_pool(model, config.models[model])
                for batch in stream(missing, [step], plan, {model: pool}, gen):
                    step_dir.write_shard(
                        [{"row_id": s["row_id"], "state": json.dumps(s)} for s in batch], schema
                    )
                    done.update({s["row_id"]: s for s in batch})
            logger.info("staged step %d %s: %d rows", index, _describe(step), len(done))
            states = [done[s["row_id"]] for s in states]
    finally:
        if pool is not None:
            stop_pool(pool)
    for i in range(0, len(states), gen.batch_size):
        yield states[i : i + gen.batch_size]


def _read_rows(step_dir: StageDir) -> list[dict]:
    table = step_dir.read()
    return table.to_pylist() if table is not None else []


def _describe(step: Step) -> str:
    return f"(turn {step.turn + 1}, layer {step.layer + 1}, model {step.model})"
