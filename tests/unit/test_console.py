import io
import json
import logging
import time

from moaa_ray import console
from moaa_ray.console import Progress, follow_file, format_table


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_without_a_terminal_progress_prints_a_line_when_one_is_due_and_a_final_line():
    out = io.StringIO()
    with Progress("generate", 36, stream=out, every_s=3600) as bar:
        bar.update(8, failed=0)  # not due yet: nothing printed
        assert out.getvalue() == ""
        bar.every_s = 0
        bar.update(16, failed=1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("generate") and "16/36 rows" in lines[0] and "failed 1" in lines[0]
    assert "rows/s" in lines[1] and lines[1].endswith(" s")


def test_on_a_terminal_progress_redraws_one_line():
    out = Terminal()
    with Progress("sft", 4, unit="steps", stream=out) as bar:
        for step in range(1, 5):
            bar.update(step, loss=1.0 / step)
    text = out.getvalue()
    assert text.count("\r") == 5 and text.count("\n") == 1
    assert "[########################] 4/4 steps · loss 0.25" in text


def test_follow_file_applies_each_new_version_of_the_file(tmp_path):
    path, seen = tmp_path / "progress.json", []
    with follow_file(path, seen.append, every_s=0.01):
        time.sleep(0.05)  # no file yet: nothing happens
        console.write_json_atomically(path, {"step": 1})
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen == [{"step": 1}]
    assert json.loads(path.read_text()) == {"step": 1}


def test_setup_sends_library_logs_to_the_file_and_only_ours_to_the_console(tmp_path, capsys):
    library = logging.getLogger("ray.data")
    library.addHandler(logging.StreamHandler())  # as Ray Data does at import
    library.propagate = False
    root_handlers = logging.getLogger().handlers[:]
    try:
        log_file = console.setup(tmp_path, verbose=False)
        library.warning("execution plan of dataset 7")
        logging.getLogger("moaa_ray.stages.runner").info("generate: 36 rows")
        logging.getLogger("moaa_ray.stages.runner").error("stage generate: partial")
        err = capsys.readouterr().err
        assert "stage generate: partial" in err
        assert "dataset 7" not in err and "36 rows" not in err
        logged = log_file.read_text()
        assert "dataset 7" in logged and "36 rows" in logged and "partial" in logged
    finally:
        logging.getLogger().handlers = root_handlers
        console._state.update(verbose=True, log_dir=None)
        library.handlers = []


def test_summary_table_lists_stages_figures_and_artifacts():
    summary = {
        "stages": {
            "generate": {"rows_total": 36, "rows_rejected": 1, "seconds": 12.0},
            "evaluate": {
                "seconds": 3.0,
                "benchmarks": {"mt": {"win_rate": 61.5, "lc_win_rate": 58.25, "baseline": "b"}},
            },
        },
        "run_dir": "runs/x",
        "final_model": "runs/x/round-1/dpo/model",
    }
    table = format_table(summary)
    assert "generate" in table and "rows_total=36" in table and "rows_rejected=1" in table
    assert "win_rate=61.5" in table and "lc_win_rate=58.25" in table and "vs b" in table
    assert table.splitlines()[-1].endswith("runs/x/round-1/dpo/model")


def test_summary_table_labels_an_lc_fallback_as_not_the_alpaca_eval_leaderboards():
    fallback = {"baseline": "b", "lc_win_rate": 58.25, "lc_win_rate_kind": "fallback"}
    official = {"baseline": "b", "lc_win_rate": 57.5, "lc_win_rate_kind": "length_controlled_v1"}
    evaluate = {"seconds": 3.0, "benchmarks": {"own": fallback, "official": official}}
    summary = {"stages": {"evaluate": evaluate}, "run_dir": "runs/x", "final_model": None}

    own, leaderboard = format_table(summary).splitlines()[3:5]

    assert "LC (fallback: not comparable with the AlpacaEval leaderboard)=58.25" in own
    assert "lc_win_rate=57.5" in leaderboard and "fallback" not in leaderboard


def test_summary_table_shows_verifier_figures_on_a_line_of_their_own():
    verifier = {"accuracy": 0.75, "proposer_accuracy": {"a": 0.5}, "verifiable": 4}
    summary = {
        "stages": {"generate": {"rows_total": 4, "seconds": 1.0, "verifier": verifier}},
        "run_dir": "runs/x",
        "final_model": None,
    }
    line = format_table(summary).splitlines()[3]
    assert line.split() == [
        "verifier",
        "accuracy=0.75,",
        "proposer_accuracy.a=0.5,",
        "verifiable=4",
    ]


def test_summary_table_shows_the_accuracy_of_verified_benchmarks():
    addition = {"accuracy": 0.75, "correct": 3, "verifiable": 4, "total": 5, "format": "verified"}
    summary = {
        "stages": {"evaluate": {"rows_total": 5, "benchmarks": {"addition": addition}}},
        "run_dir": "runs/x",
    }
    line = format_table(summary).splitlines()[3]
    assert line.split() == ["addition", "accuracy=0.75", "(3", "of", "4", "verifiable", "correct)"]


def test_summary_table_shows_the_grade_of_graded_only_benchmarks():
    mt_bench = {"baseline": None, "graded": 2, "mt_bench": {"overall": 7.25}}
    summary = {
        "stages": {"evaluate": {"rows_total": 2, "benchmarks": {"mt_bench": mt_bench}}},
        "run_dir": "runs/x",
    }
    line = format_table(summary).splitlines()[3]
    assert line.split() == ["mt_bench", "mt_bench=7.25", "(no", "baseline)"]


def test_summary_table_says_first_that_a_stage_is_incomplete():
    summary = {
        "stages": {"generate": {"rows_total": 30, "rows_failed": 6, "status": "partial"}},
        "run_dir": "runs/x",
        "final_model": None,
    }
    line = format_table(summary).splitlines()[2]
    assert "PARTIAL: rows_failed=6, rows_total=30" in line


def test_a_copied_run_keeps_its_copied_ray_logs_and_runs_on(tmp_path, monkeypatch):
    """``cp -r`` of a run follows the logs/ray link: the copy holds a real directory there."""
    from moaa_ray import console

    copied = tmp_path / "logs" / "ray"
    copied.mkdir(parents=True)
    (copied / "raylet.out").write_text("an earlier session")
    monkeypatch.setitem(console._state, "log_dir", tmp_path / "logs")
    console.link_ray_logs(str(tmp_path / "session"))
    assert (copied / "raylet.out").read_text() == "an earlier session"
    (tmp_path / "link-dir").mkdir()
    copied_link = tmp_path / "logs" / "ray"
    for item in copied_link.iterdir():
        item.unlink()
    copied_link.rmdir()
    copied_link.symlink_to(tmp_path / "link-dir")
    console.link_ray_logs(str(tmp_path / "session"))  # a link is re-pointed at the new session
    assert copied_link.resolve() == (tmp_path / "session" / "logs").resolve()
