import json
import os
import subprocess
import sys

import pytest

from moaa_ray.stages.rundir import RunDir, RunLocked
from moaa_ray.stages.runner import (
    EXIT_CODES,
    FingerprintMismatch,
    Kept,
    judge_outcome,
    stage_run,
    watch_progress,
)


def test_a_second_driver_on_the_run_dir_fails_at_once(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], stdout=subprocess.DEVNULL
    )
    try:
        lock = {"host": os.uname().nodename, "pid": holder.pid, "since": "now"}
        (tmp_path / ".moaa.lock").write_text(json.dumps(lock))
        with pytest.raises(RunLocked, match=f"in use by pid {holder.pid}"):
            with RunDir(tmp_path).lock():
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_released(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock = {"host": os.uname().nodename, "pid": int(dead.stdout), "since": "then"}
    (tmp_path / ".moaa.lock").write_text(json.dumps(lock))
    run = RunDir(tmp_path)
    with run.lock():
        with run.lock():  # re-entrant in one driver
            assert json.loads((tmp_path / ".moaa.lock").read_text())["pid"] == os.getpid()
        assert (tmp_path / ".moaa.lock").exists()
    assert not (tmp_path / ".moaa.lock").exists()


def test_a_changed_fingerprint_is_refused_naming_the_key_and_the_ways_on(tmp_path):
    run = RunDir(tmp_path)
    outputs = [tmp_path / "evaluate"]
    with stage_run(run, "evaluate", {"evaluate.model": "llama-a"}, outputs, fresh=False) as record:
        (tmp_path / "evaluate").mkdir()
        (tmp_path / "evaluate" / "part-1.parquet").write_text("rows of llama-a")
        record.finish({}, kept=Kept(1, of=1))
    with pytest.raises(FingerprintMismatch) as error:
        with stage_run(run, "evaluate", {"evaluate.model": "llama-c"}, outputs, fresh=False):
            pass
    message = str(error.value)
    assert '"llama-a" -> "llama-c"' in message and "--run-dir" in message and "--fresh" in message
    assert (tmp_path / "evaluate" / "part-1.parquet").exists()  # nothing deleted
    assert run.stage_status("evaluate")["status"] == "done"


def test_fresh_moves_earlier_outputs_aside_and_never_deletes(tmp_path):
    run = RunDir(tmp_path)
    outputs = [tmp_path / "evaluate"]
    with stage_run(run, "evaluate", {"k": 1}, outputs, fresh=False) as record:
        (tmp_path / "evaluate").mkdir()
        (tmp_path / "evaluate" / "part-1.parquet").write_text("old")
        record.finish({}, kept=Kept(1, of=1))
    with stage_run(run, "evaluate", {"k": 2}, outputs, fresh=True) as record:
        assert not (tmp_path / "evaluate").exists()
        assert record.run.stage_status("evaluate")["fingerprint"] == {"k": 2}
    [moved] = (tmp_path / "superseded").glob("*/evaluate/part-1.parquet")
    assert moved.read_text() == "old"


def test_outputs_without_a_recorded_fingerprint_are_not_reused(tmp_path):
    (tmp_path / "generate").mkdir()
    (tmp_path / "generate" / "part-1.parquet").write_text("unknown origin")
    with pytest.raises(FingerprintMismatch, match="no fingerprint was recorded"):
        with stage_run(RunDir(tmp_path), "generate", {"k": 1}, [tmp_path / "generate"], False):
            pass


def test_a_failing_stage_is_recorded_failed_with_its_error(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(RuntimeError):
        with stage_run(run, "sft", {"k": 1}, [], fresh=False):
            raise RuntimeError("out of memory")
    entry = run.stage_status("sft")
    assert entry["status"] == "failed" and "out of memory" in entry["error"]
    assert not (tmp_path / ".moaa.lock").exists()


@pytest.mark.parametrize(
    ("kept", "failed", "status"),
    [
        (Kept(4, of=4), 0, "done"),
        (Kept(3, of=4, reasons={"rows failed after retries": 1}), 1, "partial"),
        (Kept(0, of=4, reasons={"rows failed after retries": 4}), 4, "empty"),
        (Kept(0, of=5, reasons={"no valid judgments": 4, "input rows rejected": 1}), 0, "empty"),
        (Kept(0, of=0), 0, "empty"),
    ],
)
def test_the_status_tells_the_truth_about_rows(tmp_path, kept, failed, status):
    run = RunDir(tmp_path)
    with stage_run(run, "s", {}, [], fresh=False) as record:
        summary = record.finish({}, failed=failed, kept=kept)
    assert summary["status"] == status == run.stage_status("s")["status"]
    assert summary["rows_failed"] == failed
    assert run.stage_status("s")["rows_kept"] == kept.count


def test_a_stage_that_keeps_nothing_says_why_and_exits_4():
    kept = Kept(0, of=5, reasons={"input rows rejected": 1, "no valid judgments": 4})
    status, warning = judge_outcome(kept, failed=0)
    assert (status, EXIT_CODES[status]) == ("empty", 4)
    assert warning == "kept nothing of 5 input rows (no valid judgments: 4, input rows rejected: 1)"


@pytest.mark.parametrize(
    ("kept", "warned"),
    [
        (Kept(2, of=5, reasons={"all tied": 3}), True),
        (Kept(3, of=6), False),
        (Kept(6, of=6), False),
    ],
)
def test_a_stage_that_keeps_under_half_warns_and_goes_on(kept, warned):
    status, warning = judge_outcome(kept, failed=0)
    assert EXIT_CODES[status] == 0
    assert (warning == "kept only 2 of 5 input rows (all tied: 3)") if warned else warning is None


def test_the_warning_reaches_the_log_and_the_manifest(tmp_path, caplog):
    run = RunDir(tmp_path)
    with stage_run(run, "preferences", {}, [], fresh=False) as record:
        record.finish({}, kept=Kept(0, of=4, reasons={"no valid judgments": 4}))
    assert "stage preferences: kept nothing of 4 input rows (no valid judgments: 4)" in caplog.text
    entry = run.stage_status("preferences")
    assert entry["not_kept"] == {"no valid judgments": 4} and entry["rows_read"] == 4
    with stage_run(run, "preferences", {}, [], fresh=False) as record:
        record.finish({}, kept=Kept(4, of=4))  # a later run that keeps its rows clears it
    assert run.stage_status("preferences")["warning"] is None


def test_a_training_stage_is_done_without_row_counts(tmp_path):
    with stage_run(RunDir(tmp_path), "sft", {}, [], fresh=False) as record:
        summary = record.finish({"model_path": "m"})
    assert summary["status"] == "done" and "rows_kept" not in summary


def test_leftover_temporary_files_of_a_killed_driver_are_removed(tmp_path):
    stage = tmp_path / "generate"
    with stage_run(RunDir(tmp_path), "generate", {"k": 1}, [stage], fresh=False):
        stage.mkdir()
        (stage / "part-0.parquet").write_text("whole")
        (stage / ".part-1.parquet.tmp").write_text("half")  # the driver is killed here
    with stage_run(RunDir(tmp_path), "generate", {"k": 1}, [stage], fresh=False):
        assert [p.name for p in stage.iterdir()] == ["part-0.parquet"]


def test_a_stalled_stage_fails_with_what_is_pending():
    def never():
        import time

        time.sleep(60)
        yield []

    with pytest.raises(Exception, match="no batch finished in 0.3 s.*2 rows in flight"):
        list(watch_progress(never(), 0.3, lambda: "2 rows in flight"))


def test_errors_of_the_batches_reach_the_consumer():
    def broken():
        yield [1]
        raise ValueError("engine gone")

    got = []
    with pytest.raises(ValueError, match="engine gone"):
        for batch in watch_progress(broken(), 5, str):
            got.append(batch)
    assert got == [[1]]


def fail_having_written(run: RunDir, outputs: list, fingerprint: dict, file_name: str) -> None:
    """A run of stage "generate" that writes ``file_name`` into its output folder, then fails."""
    with pytest.raises(RuntimeError):
        with stage_run(run, "generate", fingerprint, outputs, fresh=False):
            outputs[0].mkdir()
            (outputs[0] / file_name).write_text("written before the failure")
            raise RuntimeError("the stage failed")


def test_a_stage_that_failed_before_writing_a_row_reruns_with_the_fixed_config(tmp_path):
    run = RunDir(tmp_path)
    outputs = [tmp_path / "generate"]
    fail_having_written(run, outputs, {"models.q.path": "BROKEN"}, ".part-1.parquet.tmp")
    with stage_run(run, "generate", {"models.q.path": "tiny:q"}, outputs, fresh=False) as record:
        record.finish({}, kept=Kept(1, of=1))
    entry = run.stage_status("generate")
    assert entry["status"] == "done" and entry["fingerprint"] == {"models.q.path": "tiny:q"}
    assert "error" not in entry and not (tmp_path / "superseded").exists()


def test_a_stage_that_failed_after_writing_rows_still_refuses_a_changed_config(tmp_path):
    run = RunDir(tmp_path)
    outputs = [tmp_path / "generate"]
    fail_having_written(run, outputs, {"models.q.path": "a"}, "part-1.parquet")
    with pytest.raises(FingerprintMismatch, match='models.q.path: "a" -> "b"'):
        with stage_run(run, "generate", {"models.q.path": "b"}, outputs, fresh=False):
            pass
    assert run.stage_status("generate")["status"] == "failed"
