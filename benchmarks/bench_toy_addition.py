"""Proof that every stage does its job: the toy task "What is A + B?" end to end.

``configs/toy-addition.yaml`` as a user runs it (``moaa run``, in a subprocess), then:

* MoA on the 500 held-out prompts (``moaa generate`` with the evaluation file as input, into a run
  of its own that nothing trains on): the aggregated answers' accuracy against each proposer's.
* Base, SFT and each DPO round's accuracy on the 500 held-out prompts, from the run's ``models``.
* MoA as reward model: the lead judge's agreement with the verifier over round 1's judged
  comparisons, against each single noisy judge's over the same comparisons.
* Negative control: the same run from round 1 on with ``dpo.swap_pairs=true`` (chosen and rejected
  exchanged, on the very same pairs).

Accuracy is of one answer sampled at temperature 1, the verifier's exact match. Gains are in
percentage points. The full mode also builds the task models in an empty cache and times it; the
quick mode reuses built models and reads their build time from their model cards.

Run as ``.venv/bin/python benchmarks/run.py [--quick] --only toy_addition``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.judge_plot import judge_bars
from benchmarks.moaa_commands import accuracies, keep_until_round_one_judged, manifest, moaa

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "toy-addition.yaml"
HELD_OUT = "moaa_ray/data/toy_addition/eval.jsonl"
SWAPPED = ["--fresh", "dpo.swap_pairs=true"]


def build_seconds(cache: Path | None) -> tuple[float, bool]:
    """Seconds to build the task models: timed in an empty ``cache``, else from their model cards."""
    from moaa_ray.tiny_models import ADDITION_MODELS, resolve_model_path

    if cache is not None:
        started = time.monotonic()
        for name in ADDITION_MODELS:
            resolve_model_path(f"tiny:{name}", cache)
        return round(time.monotonic() - started, 1), True
    paths = [Path(resolve_model_path(f"tiny:{name}")) for name in ADDITION_MODELS]
    trunk = next(paths[0].parent.glob("addition-trunk-*"))
    cards = [json.loads((p / "task_model.json").read_text()) for p in [trunk, *paths]]
    return round(sum(card["seconds"] for card in cards), 1), False


def measure(quick: bool) -> dict:
    """Every toy-task figure; each ``moaa`` command starts its own local Ray cluster."""
    figures: dict[str, Any] = {
        "setup": (
            "configs/toy-addition.yaml: 600 MoA SFT prompts, 2 DPO rounds of 400 prompts x 4 "
            "samples, 5 noisy verifier judges (flip 0.3, position bias 0.05) + majority lead "
            "judge; accuracy of one answer at temperature 1 on 500 held-out prompts"
        ),
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not quick:
            os.environ["MOAA_CACHE_DIR"] = str(tmp / "cache")  # the subprocesses build nothing
        figures["task_models_build_s"], figures["build_timed_here"] = build_seconds(
            None if quick else tmp / "cache"
        )
        main = tmp / "main"
        figures["run_s"] = moaa("run", CONFIG, main)
        stages = accuracies(main, "addition")
        rounds = [name for name in stages if name.endswith("/dpo")]
        figures.update(
            base_accuracy=stages["base"],
            sft_accuracy=stages["sft"],
            **{f"dpo_round_{i + 1}_accuracy": stages[name] for i, name in enumerate(rounds)},
            dpo_accuracy=stages[rounds[-1]],
        )
        figures["sft_gain_over_base"] = round(stages["sft"] - stages["base"], 1)
        figures["dpo_gain_over_sft"] = round(stages[rounds[-1]] - stages["sft"], 1)

        judged = manifest(main / "round-1")["stages"]["preferences"]["verifier"]
        best_judge = max(judged["judge_agreement"].values())
        figures.update(
            judged_comparisons=judged["comparisons"],
            judge_agreement={k: round(100 * v, 1) for k, v in judged["judge_agreement"].items()},
            best_single_judge_agreement=round(100 * best_judge, 1),
            ensemble_agreement=round(100 * judged["ensemble_agreement"], 1),
            ensemble_gain_over_best_judge=round(
                100 * (judged["ensemble_agreement"] - best_judge), 1
            ),
            pair_accuracy=round(100 * judged["pair_accuracy"], 1),
        )

        held_out = tmp / "moa-held-out"
        moaa(
            "generate",
            CONFIG,
            held_out,
            f"generate.inputs.0.path={HELD_OUT}",
            "generate.inputs.0.limit=500",
        )
        moa = manifest(held_out)["stages"]["generate"]["verifier"]
        proposers = {k: round(100 * v, 1) for k, v in moa["proposer_accuracy"].items()}
        figures.update(
            moa_accuracy=round(100 * moa["accuracy"], 1),
            proposer_accuracy=proposers,
            best_proposer_accuracy=max(proposers.values()),
            moa_gain_over_best_proposer=round(100 * moa["accuracy"] - max(proposers.values()), 1),
        )

        control = tmp / "swapped"
        keep_until_round_one_judged(main, control)
        figures["swapped_run_s"] = moaa("run", CONFIG, control, *SWAPPED)
        swapped = accuracies(control, "addition")
        swapped_rounds = [name for name in swapped if name.endswith("/dpo")]
        figures.update(
            **{
                f"swapped_round_{i + 1}_accuracy": swapped[name]
                for i, name in enumerate(swapped_rounds)
            },
            swapped_change_vs_sft=round(swapped[swapped_rounds[-1]] - stages["sft"], 1),
        )
    return figures


def plot(figures: dict, path: Path) -> None:
    """Accuracy per stage (with the proposers and the swapped control) and judge agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (stages_ax, judges_ax) = plt.subplots(
        1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]}
    )
    rounds = sorted(k for k in figures if k.startswith("dpo_round_"))
    names = ["base", "MoA answers", "SFT", *[f"DPO {i + 1}" for i in range(len(rounds))]]
    values = [
        figures["base_accuracy"],
        figures["moa_accuracy"],
        figures["sft_accuracy"],
        *[figures[k] for k in rounds],
    ]
    bars = stages_ax.bar(
        names, values, color=["#999", "#4c72b0", "#55a868"] + ["#c44e52"] * len(rounds)
    )
    stages_ax.bar_label(bars, fmt="%.1f")
    swapped = sorted(k for k in figures if k.startswith("swapped_round_"))
    stages_ax.plot(
        [names[3 + i] for i in range(len(swapped))],
        [figures[k] for k in swapped],
        "kv--",
        label="DPO on swapped pairs (control)",
    )
    for name, value in figures["proposer_accuracy"].items():
        stages_ax.axhline(value, color="#4c72b0", linestyle=":", linewidth=1)
        stages_ax.annotate(name, (0, value), fontsize=7, color="#4c72b0", va="bottom")
    stages_ax.set_ylabel("held-out accuracy (%)")
    stages_ax.set_ylim(0, 100)
    stages_ax.set_title("What is A + B? accuracy of one sampled answer")
    stages_ax.legend(loc="upper left", fontsize=8)

    judge_bars(judges_ax, figures["judge_agreement"], figures["ensemble_agreement"])
    judges_ax.set_ylim(50, 100)
    judges_ax.set_ylabel("agreement with the verifier (%)")
    judges_ax.set_title(f"round 1, {figures['judged_comparisons']} comparisons")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
