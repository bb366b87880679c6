"""The benchmark runner's contract: every benchmark has measure() and plot(), goals are checked."""

import importlib
import inspect
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
run = importlib.import_module("benchmarks.run")


def test_every_benchmark_module_exposes_measure_and_plot():
    for name in run.BENCHMARKS:
        module = run.module(name)
        assert list(inspect.signature(module.measure).parameters) == ["quick"], name
        assert list(inspect.signature(module.plot).parameters) == ["figures", "path"], name


def test_every_goal_names_a_benchmark_that_runs():
    assert set(run.GOALS) <= set(run.BENCHMARKS)


def test_goal_lines_say_met_or_missed_and_a_missing_figure_is_missed():
    figures = {"moa_wall_over_ideal": 1.05, "moa_speedup_over_pools": 0.5}
    lines = run.goal_lines("orchestration", figures)
    assert lines[0].endswith("met") and lines[1].endswith("MISSED")
    assert run.goal_lines("orchestration", {})[0].endswith("MISSED")


def test_a_run_leaves_out_the_gpu_benchmark_without_a_gpu_and_quick_the_toy_task():
    assert "gpu" not in run.default_benchmarks(quick=False, gpu=False)
    assert "gpu" in run.default_benchmarks(quick=True, gpu=True)
    assert "toy_addition" not in run.default_benchmarks(quick=True, gpu=True)
    assert run.default_benchmarks(quick=False, gpu=True) == run.BENCHMARKS


def test_the_gpu_benchmark_refuses_a_machine_without_a_gpu_by_name():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        run.module("gpu").measure(quick=True)
