"""The MoA SFT-data stage: prompts in, aggregated answers out as a TRL conversational dataset."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from moaa_ray.callables import load_callable
from moaa_ray.config import GenerateConfig, MoaaConfig
from moaa_ray.core.moa import LayerPlan, MoaRow, TruncatedAnswer, finish_row, plan_layers
from moaa_ray.core.verification import moa_accuracy
from moaa_ray.metrics import count_rows
from moaa_ray.pipeline.cluster_pools import cluster_pools
from moaa_ray.pipeline.inputs import fingerprint_input, load_states
from moaa_ray.pipeline.moa_graph import plan_steps, stream
from moaa_ray.pools.pool_set import PoolSet
from moaa_ray.records import Reject, sft_schema
from moaa_ray.stages.fingerprint import config_identity, models_identity
from moaa_ray.stages.layout import GENERATE
from moaa_ray.stages.rundir import RunDir, StageDir
from moaa_ray.stages.runner import BatchOutcome, run_row_stage

logger = logging.getLogger(__name__)
STAGE = GENERATE


def generate_sft(config: MoaaConfig, run_dir: str | Path, fresh: bool = False) -> dict:
    """Write the MoA SFT dataset into ``<run_dir>/generate``; a rerun resumes where it stopped.

    Args:
        config: the run's config; needs a ``generate`` section.
        run_dir: the run directory.
        fresh: if the stage's config, models or inputs changed since its outputs were written,
            move them aside and start over (otherwise such a rerun is refused).

    Returns:
        The runner's summary (rows total, written, rejected, failed, status) plus proposer answers
        dropped (empty), references cut at ``max_new_tokens`` (kept) and rows rejected because
        their final answer was cut (``truncated_answers: drop``), and aggregator prompts whose
        references were cut to fit a context window (``shortened_prompts``); with ``config.verifier``, also ``verifier``: the accuracy of the written
        rows' final answers and of each proposer (:func:`moaa_ray.core.verification.moa_accuracy`).
    """
    if config.generate is None:
        raise ValueError("config has no 'generate' section")
    stage = GenerateStage(config, config.generate, RunDir(run_dir))
    # The runner passes the stage's rows back to it as they came, whatever their type.
    return run_row_stage(stage, config, fresh, start_pools=cluster_pools)


class GenerateStage:
    """The layered MoA graph over every prompt, streaming or one model at a time (staged)."""

    name = STAGE

    def __init__(self, config: MoaaConfig, gen: GenerateConfig, run: RunDir):
        self.config, self.gen = config, gen
        self.plan: LayerPlan = plan_layers(
            gen.proposers, gen.aggregator, gen.num_layers, gen.layer_proposers
        )
        self.stage = run.stage(STAGE)
        self.sampling = json.dumps(gen.sampling.model_dump())
        self.dropped_references = 0
        self.truncated_references = 0
        self.truncated_answers = 0  # rows dropped: their final answer was cut
        self.shortened_prompts = 0  # aggregator prompts whose references were cut to fit

    def fingerprint(self) -> dict:
        """The generate section, its models and its input files' content."""
        return {
            **config_identity(self.gen, "generate"),
            **models_identity(self.config.models, self.plan.models),
            **{f"inputs.{i}": fingerprint_input(c) for i, c in enumerate(self.gen.inputs)},
        }

    def load(self) -> tuple[list[MoaRow], list[Reject]]:
        """Read and validate the prompts; bad rows become rejects."""
        return load_states(self.gen.inputs)

    def done_ids(self) -> set[str]:
        """Rows already written."""
        return self.stage.done_ids()

    def batches(self, todo: list[MoaRow], pools: PoolSet) -> Iterator[list[MoaRow]]:
        """Finished row states, batch by batch."""
        num_turns = max(len(s["targets"]) for s in todo)
        if self.gen.mode == "staged":
            yield from self._staged(todo, num_turns, pools)
        else:
            steps = plan_steps(self.plan, num_turns, staged=False)
            loading = pools.launch(self.plan.models)
            yield from stream(todo, steps, self.plan, loading, self.gen, starting=pools.wait)

    def _staged(self, todo: list[MoaRow], num_turns: int, pools: PoolSet) -> Iterator[list[MoaRow]]:
        """One model on the cluster at a time; each step's states persist, so a rerun skips them."""
        import pyarrow as pa

        schema = pa.schema([("row_id", pa.string()), ("state", pa.string())])
        states = todo
        for index, step in enumerate(plan_steps(self.plan, num_turns, staged=True)):
            step_dir = StageDir(self.stage.path / "_staged" / f"step-{index:03d}")
            ids = {s["row_id"] for s in states}
            done: dict[str, MoaRow] = {
                r["row_id"]: json.loads(r["state"])
                for r in _read_rows(step_dir)
                if r["row_id"] in ids
            }
            missing = [s for s in states if s["row_id"] not in done]
            model = str(step.model)
            if missing:
                pool = pools.only(model)
                for batch in stream(missing, [step], self.plan, {model: pool}, self.gen):
                    # Failed rows are not persisted: the next run redoes their step.
                    kept = [s for s in batch if not s.get("failed")]
                    step_dir.write_shard(
                        [{"row_id": s["row_id"], "state": json.dumps(s)} for s in kept], schema
                    )
                    done.update({s["row_id"]: s for s in batch})
            logger.info("staged step %d (turn %d, layer %d, model %s): %d rows",
                        index, step.turn + 1, step.layer + 1, model, len(done))  # fmt: skip
            states = [done[s["row_id"]] for s in states]
        for i in range(0, len(states), self.gen.batch_size):
            yield states[i : i + self.gen.batch_size]

    def write(self, batch: list[MoaRow]) -> BatchOutcome:
        """Write finished rows as one shard; failed and unusable rows become rejects."""
        rows, rejects = [], []
        for state in batch:
            self.shortened_prompts += state.get("shortened", 0)
            try:
                row = finish_row(state, self.plan, self.gen.truncated_answers == "keep")
            except ValueError as exc:
                self.truncated_answers += isinstance(exc, TruncatedAnswer)
                failed = bool(state.get("failed"))
                reason = f"generation failed: {exc}"
                rejects.append(Reject(state["source"], -1, reason, state["row_id"], failed))
                continue
            rows.append({**row, "sampling": self.sampling})
            self.dropped_references += row["dropped_references"]
            self.truncated_references += row.pop("truncated_references")
        self.stage.write_shard(rows, sft_schema())
        count_rows(STAGE, written=len(rows), rejected=len(rejects))
        return BatchOutcome(len(rows), rejects)

    def summarize(self) -> dict:
        """Proposer answers dropped (empty) in this run; the verifier's figures over every row written."""
        summary: dict = {
            "dropped_references": self.dropped_references,
            "truncated_references": self.truncated_references,
            "truncated_answers_dropped": self.truncated_answers,
            "shortened_prompts": self.shortened_prompts,
        }
        if self.config.verifier:
            written = _read_rows(self.stage)
            summary["verifier"] = moa_accuracy(written, load_callable(self.config.verifier))
        return summary

    def unused(self, summary: dict) -> dict[str, int]:
        """None: every row written is an SFT row (unusable ones are rejects)."""
        return {}


def _read_rows(step_dir: StageDir) -> list[dict]:
    table = step_dir.read()
    return table.to_pylist() if table is not None else []
