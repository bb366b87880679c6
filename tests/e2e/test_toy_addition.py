"""README's toy-task command, verbatim: every stage must move held-out accuracy the right way.

A DPO that swapped chosen and rejected, a loss mask off by one token or a reference model loaded from
the wrong path passes every other test; here it fails, because the signs are checked on a task a
program can grade: base < SFT < each DPO round, MoA above its best proposer, and DPO on swapped pairs
below SFT. The figures with their goals are benchmarks/results/toy_addition.json
(``benchmarks/run.py --only toy_addition``).
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.support.readme_runs import run_as_user

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1500)]


def accuracy(manifest: dict) -> dict[str, float]:
    return {
        model["stage"]: model["accuracy"]["addition"]
        for model in manifest["models"]
        if isinstance(model["accuracy"], dict)
    }


def test_readme_toy_run_improves_at_every_stage_and_swapped_pairs_make_it_worse(toy_run):
    console, directory, run_dir = toy_run.check(), toy_run.directory, toy_run.run_dir
    manifest = json.loads((run_dir / "manifest.json").read_text())
    measured = accuracy(manifest)
    stages = list(measured)
    assert stages == ["base", "sft", "round-1/dpo", "round-2/dpo"]
    # Each DPO round above SFT; not round 2 above round 1: once DPO has saturated (about 0.81-0.87
    # here), the two differ by less than one answer sample's noise on 500 prompts (about 0.02).
    rounds = [measured["round-1/dpo"], measured["round-2/dpo"]]
    assert measured["base"] < measured["sft"] < min(rounds), measured
    moa = manifest["models"][1]
    assert moa["stage"] == "moa-answers" and moa["accuracy"] > max(
        moa["proposer_accuracy"].values()
    )
    assert Path(manifest["models"][-1]["model_path"]) == run_dir / "round-2" / "dpo" / "model"
    table = console[re.search(r"^model +accuracy +path$", console, re.M).end() :]
    assert re.search(r"^round-2/dpo +0\.\d+ ", table, re.M)  # each model's accuracy, printed

    # Negative control: the same run with chosen and rejected swapped. Round 1's pairs are reused;
    # DPO and every evaluation after it run again (a result of the unswapped model is never reused).
    control = directory / "runs" / "swapped"
    shutil.copytree(run_dir, control)
    swap = toy_run.command.replace(str(run_dir.relative_to(directory)), "runs/swapped")
    run_as_user(f"{swap} --fresh dpo.swap_pairs=true", directory).check()
    swapped = json.loads((control / "manifest.json").read_text())
    assert accuracy(swapped)["round-1/dpo"] < measured["sft"], accuracy(swapped)
    assert accuracy(swapped)["round-2/dpo"] < measured["sft"], accuracy(swapped)
    assert (
        swapped["stages"]["generate"]["fingerprint"]
        == manifest["stages"]["generate"]["fingerprint"]
    )
