"""The README's first command, verbatim: the demo's console is short and ends with the stage table."""

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1200)]

MAX_LINES = 60


def test_demo_console_is_at_most_60_lines_and_holds_the_table(demo_run):
    console = demo_run.check()
    lines = console.splitlines()
    assert len(lines) <= MAX_LINES, console
    run_dir = demo_run.run_dir
    table = demo_run.summary  # as the demo left it: the notebooks' resume of the run rewrites it
    assert table is not None, "the demo wrote no summary.txt"
    assert table.strip() in console
    for stage in ("generate", "sft", "round-1/preferences", "round-1/dpo", "evaluate"):
        assert any(line.startswith(stage + " ") for line in table.splitlines()), table
    assert lines[0].startswith("moaa run · run directory") and "dashboard" in lines[1]
    assert (run_dir / "logs" / "moaa.log").stat().st_size > 0
