"""The MoA SFT-data stage: prompts in, aggregated answers out as a TRL conversational dataset.

With ``sft_target`` set to a proposer target (MoAA's SFT-data ablation), the proposers' answers are
the SFT targets instead (:mod:`moaa_ray.core.teachers`) and the aggregator does not run.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from moaa_ray.callables import load_callable
from moaa_ray.config import GenerateConfig, MoaaConfig
from moaa_ray.core.moa import LayerPlan, MoaRow, TruncatedAnswer, finish_row, plan_layers
from moaa_ray.core.teachers import prompt_row_id, teacher_rows
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
        The runner's summary (rows total, written, rejected, failed, status: counted in prompts)
        plus proposer answers dropped (empty), references cut at ``max_new_tokens`` (kept) and rows
        rejected because their final answer was cut (``truncated_answers: drop``), aggregator
        prompts whose references were cut to fit a context window (``shortened_prompts``), and
        ``rows_by_teacher``: the SFT rows written so far per model whose answers they hold (with
        ``all_proposers`` a prompt gives one row per proposer); with ``config.verifier``, also
        ``verifier``: the accuracy of the written rows' final answers and of each proposer
        (:func:`moaa_ray.core.verification.moa_accuracy`).
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
        self.aggregated = gen.sft_target == "aggregator"
        aggregator = gen.aggregator if self.aggregated else None
        self.plan: LayerPlan = plan_layers(
            gen.proposers, aggregator, gen.num_layers, gen.layer_proposers
        )
        self.models = self.plan.models + ((gen.reward_model,) if gen.reward_model else ())
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
            **models_identity(self.config.models, self.models),
            **{f"inputs.{i}": fingerprint_input(c) for i, c in enumerate(self.gen.inputs)},
        }

    def load(self) -> tuple[list[MoaRow], list[Reject]]:
        """Read and validate the prompts; bad rows become rejects, and so do conversations with
        several turns to answer where proposers' answers are the targets."""
        states, rejects = load_states(self.gen.inputs)
        if self.aggregated:
            return states, rejects
        single = [s for s in states if len(s["targets"]) == 1]
        for state in states:
            if len(state["targets"]) > 1:
                reason = (
                    f"sft_target {self.gen.sft_target!r} answers single-turn prompts only; this "
                    f"conversation has {len(state['targets'])} assistant turns to generate"
                )
                rejects.append(Reject(state["source"], -1, reason, state["row_id"]))
        return single, rejects

    def done_ids(self) -> set[str]:
        """Prompts whose rows are written (a prompt's rows are written in one shard)."""
        return {prompt_row_id(row_id) for row_id in self.stage.done_ids()}

    def batches(self, todo: list[MoaRow], pools: PoolSet) -> Iterator[list[MoaRow]]:
        """Finished row states, batch by batch."""
        num_turns = max(len(s["targets"]) for s in todo)
        if self.gen.mode == "staged":
            yield from self._staged(todo, num_turns, pools)
        else:
            steps = plan_steps(
                self.plan, num_turns, staged=False, reward_model=self.gen.reward_model
            )
            loading = pools.launch(self.models)
            yield from stream(todo, steps, self.plan, loading, self.gen, starting=pools.wait)

    def _staged(self, todo: list[MoaRow], num_turns: int, pools: PoolSet) -> Iterator[list[MoaRow]]:
        """One model on the cluster at a time; each step's states persist, so a rerun skips them."""
        import pyarrow as pa

        schema = pa.schema([("row_id", pa.string()), ("state", pa.string())])
        states = todo
        steps = plan_steps(self.plan, num_turns, staged=True, reward_model=self.gen.reward_model)
        for index, step in enumerate(steps):
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
        """Write finished rows as one shard (every SFT row of a prompt together); failed and
        unusable rows become rejects. Counts prompts written."""
        rows, rejects = [], []
        keep_truncated = self.gen.truncated_answers == "keep"
        for state in batch:
            self.shortened_prompts += state.get("shortened", 0)
            try:
                if self.aggregated:
                    records = [finish_row(state, self.plan, keep_truncated)]
                else:
                    target, seed = self.gen.sft_target, self.gen.teacher_seed
                    records = teacher_rows(state, self.plan, target, keep_truncated, seed)
            except ValueError as exc:
                self.truncated_answers += isinstance(exc, TruncatedAnswer)
                failed = bool(state.get("failed"))
                reason = f"generation failed: {exc}"
                rejects.append(Reject(state["source"], -1, reason, state["row_id"], failed))
                continue
            rows += [{**row, "sampling": self.sampling} for row in records]
            self.dropped_references += records[0]["dropped_references"]
            self.truncated_references += records[0]["truncated_references"]
        self.stage.write_shard(rows, sft_schema())  # the schema leaves truncated_references out
        written = len(batch) - len(rejects)
        count_rows(STAGE, written=written, rejected=len(rejects))
        return BatchOutcome(written, rejects)

    def summarize(self) -> dict:
        """Proposer answers dropped (empty) in this run; the verifier's figures over every row written."""
        summary: dict = {
            "dropped_references": self.dropped_references,
            "truncated_references": self.truncated_references,
            "truncated_answers_dropped": self.truncated_answers,
            "shortened_prompts": self.shortened_prompts,
            "rows_by_teacher": _count_teachers(self.stage),
        }
        if self.config.verifier:
            written = _read_rows(self.stage)
            summary["verifier"] = moa_accuracy(written, load_callable(self.config.verifier))
        return summary

    def unused(self, summary: dict) -> dict[str, int]:
        """None: every row written is an SFT row (unusable ones are rejects)."""
        return {}


def _count_teachers(stage: StageDir) -> dict[str, int]:
    """SFT rows written per teacher model, over every shard."""
    import pyarrow.parquet as pq

    counts: Counter[str] = Counter()
    for shard in stage.shards():
        counts.update(pq.read_table(shard, columns=["teacher"]).column("teacher").to_pylist())
    return dict(counts)


def _read_rows(step_dir: StageDir) -> list[dict]:
    table = step_dir.read()
    return table.to_pylist() if table is not None else []
