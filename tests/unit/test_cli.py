"""The exit codes of ``moaa <stage>``: they tell the truth about rows (no cluster: the stage is faked)."""

from pathlib import Path

import pytest

from moaa_ray import cli
from moaa_ray.pipeline import generate
from moaa_ray.stages.runner import FingerprintMismatch
from moaa_ray.train.recipe import TooFewRows

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def console_restored():
    """``main`` sets up the console for the process; later tests get logging back as it was."""
    import logging
    import os

    from moaa_ray import console

    variable = os.environ.get("RAY_DATA_LOGGING_CONFIG")
    handlers = logging.getLogger().handlers[:]
    state = dict(console._state)
    yield
    logging.getLogger().handlers = handlers
    console._state.update(state)
    if variable is None:
        os.environ.pop("RAY_DATA_LOGGING_CONFIG", None)
    else:
        os.environ["RAY_DATA_LOGGING_CONFIG"] = variable


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        ({"status": "done"}, 0),
        ({"status": "partial", "rows_failed": 2}, 3),
        ({"status": "empty", "rows_failed": 8}, 4),
        (FingerprintMismatch("changed: generate.aggregator"), 2),
        (TooFewRows("3 rows is fewer than global_batch_size=4: nothing to train on"), 4),
    ],
)
def test_exit_code_says_whether_every_row_was_written(monkeypatch, tmp_path, capsys, outcome, code):
    def fake_stage(config, run_dir, fresh):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(generate, "generate_sft", fake_stage)
    argv = ["generate", "--config", "configs/demo.yaml", "--run-dir", str(tmp_path)]
    assert cli.main(argv) == code
    if isinstance(outcome, Exception):  # one line that says why, no traceback
        assert capsys.readouterr().err.strip().endswith(str(outcome))


def test_fresh_reaches_the_stage(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(
        generate, "generate_sft", lambda c, r, fresh: seen.update(fresh=fresh) or {}
    )
    cli.main(["generate", "--config", "configs/demo.yaml", "--run-dir", str(tmp_path), "--fresh"])
    assert seen == {"fresh": True}


def test_an_engine_failure_inside_a_ray_task_is_said_in_one_line(monkeypatch, tmp_path, capsys):
    from ray.exceptions import RayError

    class RemoteFailure(RayError):
        def __str__(self):
            return (
                "ray::MapBatches(judges)() (pid=1)\n  File x, line 3\n"
                "moaa_ray.pools.dispatch.EngineFailure: model 'j': no usable replica\n"
                "To change retry attempts, configure DataContext."
            )

    def fake_stage(config, run_dir, fresh):
        raise RemoteFailure()

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(generate, "generate_sft", fake_stage)
    argv = ["generate", "--config", "configs/demo.yaml", "--run-dir", str(tmp_path)]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err.splitlines() == [
        "generate failed: EngineFailure: model 'j': no usable replica",
        f"  traceback: {tmp_path / 'logs' / 'moaa.log'}",
    ]


@pytest.mark.parametrize("verbose", [False, True])
def test_a_stage_failure_is_one_line_and_the_log_s_path_and_v_shows_the_traceback(
    monkeypatch, tmp_path, capsys, verbose
):
    from moaa_ray.pools.dispatch import EngineFailure

    def fake_stage(config, run_dir, fresh):
        raise EngineFailure("model 'agg' (/models/broken) failed to load: OSError: no weights")

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(generate, "generate_sft", fake_stage)
    argv = ["generate", "--config", "configs/demo.yaml", "--run-dir", str(tmp_path)]
    assert cli.main(argv + ["-v"] * verbose) == 1
    err = capsys.readouterr().err
    log = tmp_path / "logs" / "moaa.log"
    failure = [
        "generate failed: EngineFailure: model 'agg' (/models/broken) failed to load: OSError: "
        "no weights",
        f"  traceback: {log}",
    ]
    assert "Traceback (most recent call last)" in log.read_text()
    if verbose:
        assert "Traceback (most recent call last)" in err and err.splitlines()[-2:] == failure
    else:
        assert err.splitlines() == failure


def readme_validate_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return [line for line in text.splitlines() if line.startswith(".venv/bin/moaa validate ")]


def test_the_readme_validate_commands_run_as_written():
    import subprocess

    commands = readme_validate_commands()
    assert commands, "README.md shows no `.venv/bin/moaa validate` command"
    for command in commands:
        done = subprocess.run(
            command, shell=True, cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        config = command.split("--config ")[1].split()[0]
        assert done.stdout.startswith(f"{config}: valid\n")
