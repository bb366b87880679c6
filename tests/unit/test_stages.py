"""The one table of stages (``moaa_ray.stages.layout.STAGES``): the ``moaa`` subcommands, the job
scripts and the pipeline's stage functions all come from it."""

import runpy
import sys
from pathlib import Path

import pytest

from moaa_ray import cli
from moaa_ray.callables import load_callable
from moaa_ray.stages.layout import STAGES, find_stage

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def test_each_stage_has_its_own_name_and_folder_and_an_entry_point_that_loads():
    assert len({s.name for s in STAGES}) == len({s.folder for s in STAGES}) == len(STAGES)
    for stage in STAGES:
        assert callable(load_callable(stage.entry_point)), stage
        assert find_stage(stage.name) is stage
    with pytest.raises(ValueError, match="no stage is called 'train'"):
        find_stage("train")


def test_the_subcommands_are_run_and_the_stages_each_run_by_its_entry_point():
    parser = cli.build_parser()
    listed = next(a for a in parser._actions if a.dest == "command").choices
    names = [s.name for s in STAGES]
    assert [c for c in listed if c in [cli.RUN, *names]] == [cli.RUN, *names]
    for stage in STAGES:
        assert cli.stage_function(stage.name) is load_callable(stage.entry_point)


def test_each_job_script_runs_its_stage_and_there_is_one_per_stage(monkeypatch):
    names = [cli.RUN, *(s.name for s in STAGES)]
    assert sorted(p.stem for p in JOBS.glob("*.py")) == sorted(names)
    monkeypatch.setattr(sys, "path", [*sys.path])  # each script puts the checkout first
    seen = []
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(argv) or 0)
    for name in names:
        monkeypatch.setattr(sys, "argv", [f"jobs/{name}.py", "--config", "c.yaml"])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(JOBS / f"{name}.py"), run_name="__main__")
        assert stop.value.code == 0 and seen.pop() == [name, "--config", "c.yaml"]
