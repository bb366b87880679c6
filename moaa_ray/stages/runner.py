"""The one stage runner: fingerprint, run-dir lock, manifest status, pools, resume, summary, exit code.

Every stage runs inside :func:`stage_run`, which refuses to reuse outputs produced by another
fingerprint, holds the run directory's lock, and records the stage as running, then done / partial /
empty / failed. Row stages (MoA data, preferences, evaluation) go through :func:`run_row_stage`, which
adds resume bookkeeping (only ids not yet written), the stage's model pools, a stall watchdog and the
rejects file; the stage itself only says what to load, which pools to start, how to process a batch,
how to write it and which written rows are no usable output. :func:`judge_outcome` decides the status
from what the stage kept: nothing is ``empty``, under half is a warning.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypedDict, TypeVar

from moaa_ray.config import dump_config
from moaa_ray.console import Progress
from moaa_ray.stages.fingerprint import describe_change, fingerprint_hash
from moaa_ray.stages.layout import in_folder, is_round_folder
from moaa_ray.stages.rundir import RunDir, StageDir

logger = logging.getLogger(__name__)

# Exit codes of a stage's command (0: every row written).
EXIT_FAILED_ROWS = 3  # some rows failed after their retries; rerunning the command retries them
EXIT_NOTHING_WRITTEN = 4  # the stage kept no usable output (no SFT row, pair, scored question)
EXIT_CODES = {"done": 0, "partial": EXIT_FAILED_ROWS, "empty": EXIT_NOTHING_WRITTEN}


class FingerprintMismatch(RuntimeError):
    """A stage's earlier outputs were produced by another config, model or input."""


class StageStalled(RuntimeError):
    """A stage made no progress for ``ray.stall_timeout_s``."""


@dataclass(frozen=True)
class Kept:
    """What a stage kept of its input: usable outputs (SFT rows, DPO pairs, scored questions) of
    the input rows it read, and the rows it did not keep, counted by reason."""

    count: int
    of: int
    reasons: dict[str, int] = field(default_factory=dict)


def judge_outcome(kept: Kept, failed: int) -> tuple[str, str | None]:
    """A row stage's status, and the warning to print, from what it kept.

    Args:
        kept: usable outputs, input rows read, and the rows not kept by reason.
        failed: rows whose engine calls failed after retries.

    Returns:
        ``empty`` when nothing usable was kept (nothing for a later stage to train on or report),
        else ``partial`` when rows failed, else ``done``; and a warning naming the counts and
        reasons when the stage kept nothing or under half of its input, else None.
    """
    reasons = ", ".join(f"{reason}: {n}" for reason, n in Counter(kept.reasons).most_common())
    why = f" ({reasons})" if reasons else ""
    if not kept.of:
        return "empty", "read no input rows"
    if not kept.count:
        return "empty", f"kept nothing of {kept.of} input rows{why}"
    status = "partial" if failed else "done"
    if kept.count < kept.of / 2:
        return status, f"kept only {kept.count} of {kept.of} input rows{why}"
    return status, None


@dataclass
class StageRecord:
    """The manifest entry of a running stage; :meth:`finish` sets its final status."""

    run: RunDir
    name: str

    def update(self, **fields: Any) -> None:
        """Merge fields into the stage's manifest entry."""
        self.run.update_stage(self.name, **fields)

    def finish(self, summary: dict, *, failed: int = 0, kept: Kept | None = None) -> dict:
        """Record the outcome and return ``summary`` with its ``status``.

        Args:
            summary: the stage's figures.
            failed: rows whose engine calls failed after retries (retried by the next run).
            kept: what a row stage kept of its input (:func:`judge_outcome`); None for stages
                without rows (training).

        Returns:
            The summary plus ``status``: ``done``, ``partial`` (rows failed) or ``empty`` (nothing
            usable kept); with ``kept``, also ``rows_read``, ``rows_kept``, ``not_kept`` (rows by
            reason) and ``warning`` (kept nothing or under half; else None).
        """
        status, warning = ("done", None) if kept is None else judge_outcome(kept, failed)
        summary = {**summary, "status": status, "rows_failed": failed}
        if kept is not None:  # warning None replaces an earlier run's in the manifest
            summary.update(
                rows_read=kept.of, rows_kept=kept.count, not_kept=kept.reasons, warning=warning
            )
        if warning:
            logger.warning("stage %s: %s", self.name, warning)
        self.update(**summary)
        if failed:
            logger.error(
                "stage %s: %s, %d rows failed after their retries; rerunning the command retries "
                "them", self.name, status, failed,
            )  # fmt: skip
        return summary


@contextmanager
def stage_run(
    run: RunDir, name: str, fingerprint: dict[str, Any], outputs: list[Path], fresh: bool
) -> Iterator[StageRecord]:
    """Hold the run directory for one stage whose results are keyed by ``fingerprint``.

    Args:
        run: the run directory.
        name: the stage's manifest entry.
        fingerprint: everything that determines the stage's outputs (flat, JSON-able).
        outputs: the stage's files and folders, moved aside when ``fresh`` redoes the stage.
        fresh: when the recorded fingerprint differs, move the old outputs aside and start over
            (instead of refusing).

    Raises:
        FingerprintMismatch: earlier outputs came from another fingerprint and ``fresh`` is off;
            raised before anything loads. An earlier run that wrote nothing (it failed before its
            first row) blocks nothing: its entry is replaced.
        RunLocked: another driver holds the run directory.
    """
    with run.lock():
        _check_fingerprint(run, name, fingerprint, outputs, fresh)
        for path in outputs:
            if path.is_dir() and (removed := run.remove_temp_files(path)):
                logger.info("removed %d temporary files of an interrupted run in %s", removed, path)
        record = StageRecord(run, name)
        record.update(
            status="running",
            fingerprint=fingerprint,
            fingerprint_hash=fingerprint_hash(fingerprint),
        )
        try:
            yield record
        except BaseException as exc:
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            raise


def _check_fingerprint(
    run: RunDir, name: str, fingerprint: dict, outputs: list[Path], fresh: bool
) -> None:
    recorded = run.stage_status(name).get("fingerprint")
    if recorded == fingerprint:
        return
    if not _has_results(outputs):  # e.g. it failed before its first row: nothing to keep apart
        if recorded is not None:
            logger.info("stage %s: its earlier run wrote nothing; running the new config", name)
            run.update_stage(name, reset=True)
        return
    change = (
        describe_change(recorded, fingerprint)
        if recorded is not None
        else "  (outputs exist but no fingerprint was recorded for them)"
    )
    if not fresh:
        raise FingerprintMismatch(
            f"stage {name!r} in {run.root} holds results of another configuration; changed:\n"
            f"{change}\nEither use a new --run-dir, or add --fresh to move this stage's earlier "
            f"outputs to {run.root / 'superseded'}/ and run it again."
        )
    logger.warning("stage %s: configuration changed, starting over:\n%s", name, change)
    run.move_aside(outputs)
    run.update_stage(name, reset=True, status="superseded")


def _has_results(outputs: list[Path]) -> bool:
    """Whether any of a stage's outputs holds a file (temporary files of atomic writes aside)."""
    files = [p for p in outputs if p.is_file()]
    files += [f for p in outputs if p.is_dir() for f in p.rglob("*") if f.is_file()]
    return any(not f.name.startswith(".") for f in files)


class KeyedRow(TypedDict):
    """What the runner reads of a row state: its stable id."""

    row_id: str


Row = TypeVar("Row", bound=KeyedRow)


class RowStage(Protocol, Generic[Row]):
    """What a row stage supplies to :func:`run_row_stage`, over its own row state (``Row``: e.g.
    :class:`~moaa_ray.core.moa.MoaRow`)."""

    name: str
    stage: StageDir  # where its rows are written

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the stage's outputs."""
        ...

    def load(self) -> tuple[list[Row], list]:
        """Every row state the stage should end up with, and the input rejects."""
        ...

    def done_ids(self) -> set[str]:
        """Ids of rows already written (kept or permanently dropped)."""
        ...

    def batches(self, todo: list[Row], pools: Any) -> Iterator[list[Row]]:
        """Process the rows to do with the pools (a :class:`~moaa_ray.pools.pool_set.PoolSet`)."""
        ...

    def write(self, batch: list[Row]) -> BatchOutcome:
        """Write one processed batch."""
        ...

    def summarize(self) -> dict:
        """The stage's figures over everything it has written."""
        ...

    def unused(self, summary: dict) -> dict[str, int]:
        """Rows written that are no usable output (a prompt without a pair, a question nobody
        scored), by reason, from :meth:`summarize`'s figures."""
        ...


@dataclass
class BatchOutcome:
    """What writing one batch did: rows written, and the rows that were not (with reasons)."""

    written: int = 0
    rejects: list = field(default_factory=list)  # records.Reject; ``failed`` ones are retried


def run_row_stage(
    stage: RowStage[Row],
    config: Any,
    fresh: bool = False,
    *,
    start_pools: Callable[[Any], AbstractContextManager[Any]],
) -> dict:
    """Run a row stage to completion: only rows not yet written, every failure recorded.

    Args:
        stage: the stage.
        config: the run's config (models, Ray settings).
        fresh: redo the stage if its fingerprint changed (earlier outputs moved aside).
        start_pools: given the config, joins the cluster and holds the stage's model pools open
            (:func:`moaa_ray.pipeline.cluster_pools.cluster_pools`); called only when rows remain.

    Returns:
        The stage's summary with ``rows_total``, ``rows_written``, ``rows_rejected``,
        ``rows_failed``, ``seconds``, ``status`` and what it kept (:meth:`StageRecord.finish`):
        usable outputs are the rows written less :meth:`RowStage.unused`, of the input rows read.
    """
    started = time.monotonic()
    run = RunDir(stage.stage.path.parent)
    with stage_run(run, stage.name, stage.fingerprint(), [stage.stage.path], fresh) as record:
        run.record_start(dump_config(config))
        # 1. Rows to do: every valid row not written by an earlier run.
        states, rejects = stage.load()
        done = stage.done_ids()
        todo = [s for s in states if s["row_id"] not in done]
        record.update(rows_total=len(states), rows_done_before=len(done))
        logger.info(
            "%s: %d rows, %d already done, %d to do", stage.name, len(states), len(done), len(todo)
        )
        # 2. Process them through the stage's pools, writing batch by batch.
        written = processed = failed = 0
        batch_rejects: list = []
        if todo:
            with (
                start_pools(config) as pools,
                Progress(stage_label(run, stage.name), len(todo)) as bar,
            ):
                batches = stage.batches(todo, pools)
                for batch in watch_progress(batches, config.ray.stall_timeout_s, pools.describe):
                    outcome = stage.write(batch)
                    written += outcome.written
                    batch_rejects += outcome.rejects
                    processed += len(batch)
                    failed += sum(1 for r in outcome.rejects if r.failed)
                    bar.update(processed, failed=failed)
        # 3. Rejects (bad input, unusable output, failed rows), what was kept, and the outcome.
        stage.stage.write_rejects(rejects + batch_rejects)
        summary = {
            **stage.summarize(),
            "rows_total": len(done) + written,  # no need to read every shard again
            "rows_written": written,
            "rows_rejected": len(rejects) + len(batch_rejects) - failed,
            "seconds": round(time.monotonic() - started, 1),
        }
        unused = stage.unused(summary)
        not_kept = Counter(unused) + Counter(_reject_kind(r) for r in batch_rejects)
        not_kept["input rows rejected"] += len(rejects)
        usable = summary["rows_total"] - sum(unused.values())
        kept = Kept(usable, of=len(states) + len(rejects), reasons=dict(+not_kept))
        result = record.finish(summary, failed=failed, kept=kept)
        return {**result, "skipped": True} if not todo else result


def _reject_kind(reject: Any) -> str:
    """How the rejects of written batches are counted: engine failures apart from the rest."""
    return "rows failed after retries" if reject.failed else "outputs rejected"


def stage_label(run: RunDir, name: str) -> str:
    """How the console names a stage: ``preferences``, or ``round-2/preferences`` inside a round."""
    return in_folder(run.root.name, name) if is_round_folder(run.root.name) else name


def watch_progress(
    batches: Iterator[list[Row]], stall_timeout_s: float, describe: Any
) -> Iterator[list[Row]]:
    """Yield ``batches``; fail when none arrives for ``stall_timeout_s``.

    The batches are produced on a thread, so a hang anywhere below (a lost task, resources that
    never free up) surfaces as :class:`StageStalled` with ``describe()``'s account of the cluster.
    """
    done = object()
    handoff: queue.Queue = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            for batch in batches:
                handoff.put(batch)
            handoff.put(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            handoff.put(exc)

    threading.Thread(target=produce, name="stage-batches", daemon=True).start()
    while True:
        try:
            item = handoff.get(timeout=stall_timeout_s)
        except queue.Empty:
            raise StageStalled(
                f"no batch finished in {stall_timeout_s:g} s (ray.stall_timeout_s); {describe()}"
            ) from None
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
