"""Evidence on real weights: MoAA with SmolLM2-135M-Instruct in every role, on the facts task.

``configs/smollm2-facts.yaml`` as a user runs it (``moaa run``, in a subprocess): self-MoA SFT data
(three samples of the model, aggregated by the model), SFT, then on-policy samples judged by the model
itself (logprob verdicts in both orders, and the model again as the aggregator judge), best vs worst
as DPO pairs, and DPO. The verifier (``moaa_ray.tasks.facts:verify_fact``) trains nothing: it only
measures. Then:

* Held-out accuracy (300 questions on facts no training prompt touches) of the base, SFT and DPO
  models: of answers sampled at temperature 1 (the run's own evaluations, three samples per
  question, averaged, with a 95% interval over questions) and greedy (``moaa evaluate`` of each
  model at temperature 0, with Wilson's interval).
* MoA answers against single samples on the SFT prompts (the generate stage's verifier figures),
  and SFT on them against SFT on the first proposer's samples of the same prompts (the aggregation's
  own share of the gain).
* The MoA reward model against its single judge: agreement with the verifier over the judged pairs
  whose samples it splits (one right, one wrong), each order alone and both orders together; and,
  on the same pairs, the base model's likelihood of each sample (the ``likelihood`` reward: its
  mean token log-probability, no judge prompt).
* Training: the DPO pairs' chosen and rejected log-probabilities after training.
* Negative control: DPO on the very same pairs with chosen and rejected exchanged.
* The project's own ``evaluate`` win rate of the final model against the base model on 50 of the
  held-out questions, judged by the base model (logprob verdicts, both orders).

Accuracies are in percent. Every run is kept in ``runs/real-evidence/`` (``$MOAA_EVIDENCE_DIR``), so
a rerun resumes what is done; delete it to measure from scratch. ``$MOAA_EVIDENCE_RUN`` names a
finished ``moaa run`` of the config to measure instead of the benchmark's own.

Run as ``.venv/bin/python benchmarks/run.py --only real_evidence``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.judge_plot import judge_bars
from benchmarks.moaa_commands import keep_until_round_one_judged, manifest, moaa
from moaa_ray.core.verification import mean_interval
from moaa_ray.stages.layout import BASE, EVALUATE, SFT, round_folder
from moaa_ray.tasks.facts import verify_fact

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "smollm2-facts.yaml"
BENCHMARK = "facts"
HELD_OUT = ROOT / "moaa_ray" / "data" / "facts" / "eval.jsonl"
WORK = Path(os.environ.get("MOAA_EVIDENCE_DIR", ROOT / "runs" / "real-evidence"))
JUDGED = 50  # held-out questions the base model judges (two verdicts of ~200 tokens each)
GREEDY = ["evaluate.sampling.temperature=0.0", "evaluate.num_samples=1"]
SWAPPED = ["--fresh", "dpo.swap_pairs=true"]


def percent(bounds: list[float]) -> list[float]:
    return [round(100 * bound, 1) for bound in bounds]


def accuracy(evaluation_dir: Path) -> dict:
    """An evaluation's held-out accuracy (%) and its 95% interval, from its ``results.json``."""
    facts = benchmark_results(evaluation_dir, BENCHMARK)
    return {
        "accuracy": round(100 * facts["accuracy"], 1),
        "accuracy_ci": percent(facts["accuracy_ci"]),
    }


def benchmark_results(evaluation_dir: Path, benchmark: str) -> dict:
    """One benchmark's results in an evaluation stage's ``results.json``."""
    return json.loads((evaluation_dir / "results.json").read_text())["benchmarks"][benchmark]


def evaluation_dir(run_dir: Path, stage: str, last: bool) -> Path:
    """Where ``moaa run`` evaluated a model of the run: ``base``, ``sft`` or ``round-<r>/dpo``."""
    if last:
        return run_dir / EVALUATE
    folder = {BASE: BASE, SFT: round_folder(0)}.get(stage, stage.split("/")[0])
    return run_dir / folder / EVALUATE


def greedy_accuracy(model_path: str, run_dir: Path) -> dict:
    """Held-out accuracy (%) of ``model_path``'s greedy answers (``moaa evaluate``), with its
    interval, as ``greedy_accuracy`` and ``greedy_accuracy_ci``."""
    moaa("evaluate", CONFIG, run_dir, f"models.smol.path={model_path}", *GREEDY)
    return {f"greedy_{key}": value for key, value in accuracy(run_dir / "evaluate").items()}


def share_by_question(evaluation_dir: Path) -> dict[str, float]:
    """Each held-out question's share of right answers in an evaluation's rows, by question id."""
    import pyarrow.parquet as pq

    shares = {}
    for shard in sorted(evaluation_dir.glob("part-*.parquet")):
        for row in pq.read_table(shard, columns=["question_id", "sample_accuracy"]).to_pylist():
            if row["sample_accuracy"] is not None:
                shares[row["question_id"]] = row["sample_accuracy"]
    return shares


def single_sample_rows(generate_dir: Path, target: Path) -> None:
    """SFT rows as the generate stage wrote them, with the first proposer's sample as the answer
    in place of the aggregated one: the data of SFT without the aggregation (written once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if target.exists():  # a rewrite would change the data's digest and retrain
        return
    rows = []
    for shard in sorted(generate_dir.glob("part-*.parquet")):
        for row in pq.read_table(shard, columns=["messages", "proposals"]).to_pylist():
            last_turn = max(p["turn"] for p in row["proposals"])
            samples = [
                p["content"]
                for p in row["proposals"]
                if p["turn"] == last_turn and p["layer"] == 0 and p["content"]
            ]
            if samples:
                answer = {"role": "assistant", "content": samples[0]}
                rows.append({"messages": [*row["messages"][:-1], answer]})
    target.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), target / "part-00000.parquet")


def paired_outcomes(before: dict[str, float], after: dict[str, float]) -> dict:
    """Two models on the same questions, each question's share of right answers: how many
    questions the second model answers better (``gained``) and worse (``lost``), the exact sign
    test's two-sided p-value of that split (with one answer per question, McNemar's exact test),
    and the mean gain per question (%) with its 95% interval over questions."""
    common = [q for q in before if q in after]
    gained = sum(after[q] > before[q] for q in common)
    lost = sum(after[q] < before[q] for q in common)
    changed = gained + lost
    tail = sum(math.comb(changed, k) for k in range(min(gained, lost) + 1)) / 2**changed
    differences = [after[q] - before[q] for q in common]
    return {
        "gained": gained,
        "lost": lost,
        "sign_test_p": min(1.0, 2 * tail),
        "mean_gain": round(100 * sum(differences) / len(differences), 1),
        "mean_gain_ci": percent(list(mean_interval(differences))),
    }


def judged_config(final_model: str, work: Path) -> Path:
    """The config evaluating ``final_model`` against the base model on the first ``JUDGED``
    held-out questions, as AlpacaEval-style rows judged by the base model in both orders."""
    questions = [json.loads(line) for line in HELD_OUT.read_text().splitlines() if line.strip()]
    rows = [{"instruction": q["prompt"], "dataset": BENCHMARK} for q in questions[:JUDGED]]
    (work / "held_out.json").write_text(json.dumps(rows))
    config = yaml.safe_load(CONFIG.read_text())
    judging = config["preferences"]["judging"]
    config["models"]["base"] = dict(config["models"]["judge"])  # the untrained weights
    config["models"]["smol"]["path"] = final_model
    config["evaluate"] = {
        **config["evaluate"],
        "benchmarks": [
            {"path": str(work / "held_out.json"), "format": "alpaca_eval", "baseline": "model"}
        ],
        "baseline_model": "base",
        "judging": {**judging, "judges": ["base"], "aggregator_judge": None},
        "every_round": False,
        "num_samples": 1,  # a judged benchmark compares one answer of each model
    }
    path = work / "judged.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def judge_figures(run_dir: Path) -> dict:
    """The MoA reward model's and its single judge's agreement with the verifier, in round 1."""
    judged = manifest(run_dir / "round-1")["stages"]["preferences"]["verifier"]
    percent = lambda value: None if value is None else round(100 * value, 1)  # noqa: E731
    return {
        "judged_comparisons": judged["comparisons"],
        "judge_agreement": {k: percent(v) for k, v in judged["judge_agreement"].items()},
        "ensemble_agreement": percent(judged["ensemble_agreement"]),
        "split_pairs": judged["split_pairs"],
        "judge_pair_agreement": {k: percent(v) for k, v in judged["judge_pair_agreement"].items()},
        "ensemble_pair_agreement": percent(judged["ensemble_pair_agreement"]),
        "prompts_with_correct_and_wrong": percent(judged["prompts_with_correct_and_wrong"]),
        "chosen_correct": percent(judged["chosen_correct"]),
        "rejected_correct": percent(judged["rejected_correct"]),
        "pair_accuracy": percent(judged["pair_accuracy"]),
    }


def likelihood_figures(run_dir: Path) -> dict:
    """On the judged pairs of round 1 that the verifier splits, how often the sample the base
    model finds likelier (mean token log-probability, the ``likelihood`` reward, read by the
    project's hf engine) is the right one: the signal the model has without a judge prompt."""
    import pyarrow.parquet as pq

    from moaa_ray.config import ModelConfig
    from moaa_ray.engines.hf import HFEngine

    rows = []
    for shard in sorted((run_dir / "round-1" / "preferences").glob("part-*.parquet")):
        rows += pq.read_table(shard, columns=["prompt", "samples"]).to_pylist()
    engine = HFEngine(ModelConfig(path="real:smollm2-135m-instruct", engine="hf"))
    conversations = [
        [*row["prompt"], {"role": "assistant", "content": sample}]
        for row in rows
        for sample in row["samples"]
    ]
    scores = iter(
        score
        for start in range(0, len(conversations), 32)
        for score in engine.answer_logprobs(conversations[start : start + 32])
    )
    split = agreed = 0
    for row in rows:
        likelihood = [next(scores) for _ in row["samples"]]
        right = [verify_fact(row["prompt"], sample) for sample in row["samples"]]
        for other in range(1, len(right)):  # anchor pairs, as the judges compared them
            if right[0] is None or right[other] is None or right[0] == right[other]:
                continue
            split += 1
            agreed += (likelihood[0] > likelihood[other]) == right[0]
    return {
        "likelihood_split_pairs": split,
        "likelihood_pair_agreement": round(100 * agreed / split, 1) if split else None,
    }


def training_figures(run_dir: Path) -> dict:
    """The last DPO step's log-probabilities of the chosen and rejected answers, and its margin."""
    dpo = manifest(run_dir / "round-1")["stages"]["dpo"]
    metrics = dpo.get("metrics") or {}
    keys = ("chosen_logps", "rejected_logps", "reward_margin", "reward_accuracy")
    return {f"dpo_{key}": round(metrics[key], 3) for key in keys if key in metrics}


def measure(quick: bool) -> dict:
    """Every figure; each ``moaa`` command starts its own local Ray cluster."""
    started = time.monotonic()
    figures: dict[str, Any] = {
        "setup": (
            "configs/smollm2-facts.yaml: real:smollm2-135m-instruct (hf engine, CPU) as 3 proposers, "
            "aggregator, policy, judge and aggregator judge; 230 MoA SFT prompts; 1 DPO round of 48 "
            "prompts x 4 samples, anchor pairs judged in both orders (logprob verdicts); accuracy "
            "on 300 held-out facts questions, 3 samples each at T=1 (the verifier only measures)"
        ),
    }
    WORK.mkdir(parents=True, exist_ok=True)
    main = Path(os.environ.get("MOAA_EVIDENCE_RUN", WORK / "main"))
    figures["resumed"] = (main / "manifest.json").exists()  # then the seconds are a rerun's
    figures["run_s"] = moaa("run", CONFIG, main)
    base_results = benchmark_results(evaluation_dir(main, BASE, last=False), BENCHMARK)
    figures["held_out_questions"] = base_results["verifiable"]
    figures["samples_per_question"] = base_results["samples_per_question"]
    models = {m["stage"]: m["model_path"] for m in manifest(main)["models"] if m["model_path"]}
    rounds = [name for name in models if name.endswith("/dpo")]
    figures["stages"] = {}
    for name in ["base", "sft", *rounds]:
        figures["stages"][name] = {
            **accuracy(evaluation_dir(main, name, last=name == rounds[-1])),
            **greedy_accuracy(models[name], WORK / "greedy" / name.replace("/", "-")),
        }
    base, final = figures["stages"]["base"], figures["stages"][rounds[-1]]
    figures.update(
        base_accuracy=base["accuracy"],
        base_accuracy_ci=base["accuracy_ci"],
        final_accuracy=final["accuracy"],
        final_accuracy_ci=final["accuracy_ci"],
        gain_over_base=round(final["accuracy"] - base["accuracy"], 1),
        intervals_overlap=final["accuracy_ci"][0] <= base["accuracy_ci"][1],
    )
    figures["final_vs_base_questions"] = paired_outcomes(
        share_by_question(main / "base" / "evaluate"), share_by_question(main / "evaluate")
    )
    moa = manifest(main)["stages"]["generate"]["verifier"]
    figures["moa_accuracy"] = round(100 * moa["accuracy"], 1)
    figures["proposer_accuracy"] = {
        k: round(100 * v, 1) for k, v in moa["proposer_accuracy"].items()
    }
    figures.update(judge_figures(main))
    figures.update(likelihood_figures(main))

    single = WORK / "single-sample-sft"
    single_sample_rows(main / "generate", single / "data")
    moaa("sft", CONFIG, single, f"sft.data_path={single / 'data'}")
    moaa("evaluate", CONFIG, single, f"models.smol.path={single / 'sft' / 'model'}")
    single_sft = accuracy(single / "evaluate")
    figures["single_sample_sft_accuracy"] = single_sft["accuracy"]
    figures["single_sample_sft_accuracy_ci"] = single_sft["accuracy_ci"]
    figures["moa_sft_vs_single_sample_sft_questions"] = paired_outcomes(
        share_by_question(single / "evaluate"), share_by_question(main / "round-0" / "evaluate")
    )
    figures.update(training_figures(main))

    control = WORK / "swapped"
    if not control.exists():
        keep_until_round_one_judged(main, control)
    figures["swapped_run_s"] = moaa("run", CONFIG, control, *SWAPPED)
    swapped = accuracy(control / "evaluate")
    figures["swapped_final_accuracy"] = swapped["accuracy"]
    figures["swapped_final_accuracy_ci"] = swapped["accuracy_ci"]
    figures["swapped_below_final"] = figures["swapped_final_accuracy"] < final["accuracy"]

    judged = WORK / "judged"
    moaa("evaluate", judged_config(models[rounds[-1]], WORK), judged)
    result = benchmark_results(judged / EVALUATE, "held_out")
    keys = ("judged", "wins", "ties", "losses", "win_rate", "position_bias_rate")
    figures["judged_vs_base"] = {key: result.get(key) for key in keys}
    figures["total_s"] = round(time.monotonic() - started, 1)
    return figures


def plot(figures: dict, path: Path) -> None:
    """Held-out accuracy per stage (sampled and greedy, with intervals) and judge agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (stages_ax, judges_ax) = plt.subplots(
        1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]}
    )
    names = list(figures["stages"])
    for offset, key, colour, label in [
        (-0.2, "accuracy", "#4c72b0", f"T=1 ({figures['samples_per_question']} samples each)"),
        (0.2, "greedy_accuracy", "#999", "greedy"),
    ]:
        values = [figures["stages"][name][key] for name in names]
        errors = [
            [v - figures["stages"][n][f"{key}_ci"][0] for n, v in zip(names, values, strict=True)],
            [figures["stages"][n][f"{key}_ci"][1] - v for n, v in zip(names, values, strict=True)],
        ]
        xs = [i + offset for i in range(len(names))]
        bars = stages_ax.bar(xs, values, 0.4, yerr=errors, capsize=3, color=colour, label=label)
        stages_ax.bar_label(bars, fmt="%.1f", padding=8)
    stages_ax.plot(
        [len(names) - 1 - 0.2],
        [figures["swapped_final_accuracy"]],
        "kv",
        label="DPO on swapped pairs (control)",
    )
    stages_ax.axhline(figures["moa_accuracy"], color="#55a868", linestyle=":", linewidth=1)
    stages_ax.annotate(
        "MoA answers (SFT prompts)", (-0.4, figures["moa_accuracy"]), fontsize=7, va="bottom"
    )
    stages_ax.set_xticks(range(len(names)), names)
    stages_ax.set_ylabel("held-out accuracy (%), 95% interval")
    stages_ax.set_ylim(0, 100)
    stages_ax.set_title("SmolLM2-135M-Instruct, facts task, self-MoA")
    stages_ax.legend(loc="upper left", fontsize=8)

    judge_bars(judges_ax, figures["judge_pair_agreement"], figures["ensemble_pair_agreement"])
    judges_ax.axhline(figures["likelihood_pair_agreement"], color="#55a868", linestyle=":")
    judges_ax.annotate(
        "base model's likelihood",
        (-0.4, figures["likelihood_pair_agreement"]),
        fontsize=7,
        va="bottom",
    )
    judges_ax.axhline(50, color="k", linewidth=0.5)
    judges_ax.set_ylim(0, 100)
    judges_ax.set_ylabel("picks the right answer (%)")
    judges_ax.set_title(f"round 1, {figures['split_pairs']} pairs the verifier splits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
