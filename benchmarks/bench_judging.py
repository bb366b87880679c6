"""Judging cost: judge calls and generated tokens per pair, text vs logprob verdicts, pairings.

The preference stage (``PreferenceStage``: K samples, a criteria selector, 2 judges in both A/B orders
and an aggregator judge) runs in four variants, {text, logprob} verdicts x {round_robin, anchor}
pairing, with K = 4 samples per prompt. Each role is its own model (own pool), so the engine actors'
stats (``EngineActor.stats``: calls and items finished) split the cost by role.

- On ``simulated`` engines (no latency): judge requests (engine items) and batched engine calls per
  prompt and per DPO pair kept, by role (judges, aggregator judge, criteria selector), checked against
  ``moaa_ray.core.pairing.count_judge_calls`` over every prompt's judged pairs
  (``calls_match_formula``). The policy's sampling call is not a judge call and is not counted.
- On tiny transformers models (``tiny:*``, hf engine on CPU, judges' ``max_new_tokens`` =
  ``JUDGE_TOKENS``; round robin only in quick mode): tokens the judges and the aggregator judge
  generate per judged pair, counted by re-tokenizing their raw outputs from the stage's
  ``judgments/`` audit table with each model's tokenizer, each output capped at ``JUDGE_TOKENS``
  (random models emit partial UTF-8 bytes that re-tokenize to more tokens than were generated; the
  uncapped count is reported too). The end-of-turn token is not in the text, so not counted; the
  criteria selector generates the same in both modes and is not counted. Logprob verdicts generate
  no token (one forward pass per request; the audit's ``raw`` is null, ``p_a`` holds P(A)). Also
  the stage wall time per judged pair (sampling and criteria included) and the judge and aggregator
  pools' busy time per judged pair, text vs logprob (``logprob_speedup_vs_text``: round robin).
- On the toy task "What is A + B?" (``configs/toy-addition.yaml``'s preference stage: policy
  ``tiny:addition-base``, K = 4, 5 noisy verifier judges and the majority lead judge, all
  ``function`` engines; 48 DPO prompts, 200 in the full run), round robin against anchor pairing on
  the same samples (same policy, seed and batches): per pairing, the DPO pairs kept, the judge
  requests per prompt and, over kept pairs the verifier splits (one answer correct, one wrong), how
  often the chosen answer is the correct one (``toy_<pairing>_pairs_chosen_correct_rate``, over
  ``toy_<pairing>_split_pairs``); and ``toy_anchor_agreement_with_round_robin``: over prompts both
  pairings keep a pair for (with the same samples), how often round robin's scores rank anchor's
  chosen sample strictly above its rejected one. Function engines write text and have no
  log-probabilities (``FunctionEngine.choice_logprobs`` raises), so logprob against text verdicts is
  not measurable on this task: only the pairings are compared there.

A "judged pair" is a pair of samples the pairing compares (6 per prompt in round robin, 3 anchored,
for K = 4); a "DPO pair kept" is a (chosen, rejected) row the stage writes. Random tiny models never
write a parseable text verdict, so their text variants keep no DPO pair: tokens are per judged pair.

Run as ``.venv/bin/python benchmarks/run.py [--quick] --only judging``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from moaa_ray.config import MoaaConfig, load_config
from moaa_ray.core.pairing import count_judge_calls
from moaa_ray.core.verification import share
from moaa_ray.engines.base import SamplingParams
from moaa_ray.pipeline.preferences import PreferenceStage
from moaa_ray.pools.pool_set import PoolSet
from moaa_ray.stages.cluster import connect
from moaa_ray.stages.rundir import RunDir
from moaa_ray.tasks.addition import verify

if __package__ in (None, ""):  # run as a script: the repo root holds the `benchmarks` package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_orchestration import (  # noqa: E402
    JUDGE_AGGREGATOR,
    JUDGES,
    POLICY,
    ROOT,
    SELECTOR,
    simulated_models,
    write_prompts,
)

NUM_SAMPLES = 4
SAMPLE_TOKENS = 32
JUDGE_TOKENS = 64
BATCH = 4  # prompts per stream batch
VERDICT_MODES = ("text", "logprob")
PAIRINGS = ("round_robin", "anchor")
VARIANTS = [(mode, pairing) for mode in VERDICT_MODES for pairing in PAIRINGS]
ROLES = {"judges": JUDGES, "aggregator": [JUDGE_AGGREGATOR], "selector": [SELECTOR]}
TINY = {  # role model -> tiny model, as in configs/demo.yaml (the selector gets its own pool)
    POLICY: "tiny:llama-a",
    JUDGES[0]: "tiny:qwen2-b",
    JUDGES[1]: "tiny:llama-c",
    JUDGE_AGGREGATOR: "tiny:qwen2-d",
    SELECTOR: "tiny:qwen2-d",
}
SIZES = {"simulated_prompts": (24, 96), "tiny_prompts": (4, 24), "toy_prompts": (40, 200)}
SIDES = ("chosen", "rejected")  # a kept row's two answers
DEMO_PROMPTS = ROOT / "moaa_ray" / "data" / "demo_prompts.jsonl"
TOY_CONFIG = ROOT / "configs" / "toy-addition.yaml"
TOY_PROMPTS = ROOT / "moaa_ray" / "data" / "toy_addition" / "dpo.jsonl"


def tiny_models() -> dict:
    """The tiny hf models of each role, as the demo configures them."""
    model = {"engine": "hf", "num_cpus": 0.5, "max_batch_size": 8, "num_replicas": [1, 1]}
    return {name: {**model, "path": path} for name, path in TINY.items()}


def judging_config(models: dict, inputs: dict, mode: str, pairing: str) -> MoaaConfig:
    """The preference stage with 2 judges, an aggregator judge and a criteria selector."""
    return MoaaConfig.model_validate(
        {
            "models": models,
            "preferences": {
                "inputs": [inputs],
                "policy": POLICY,
                "num_samples": NUM_SAMPLES,
                "sampling": {"temperature": 1.0, "max_new_tokens": SAMPLE_TOKENS, "seed": 0},
                "truncated_samples": "keep",  # random tiny models never end an answer
                "judging": {
                    "judges": JUDGES,
                    "aggregator_judge": JUDGE_AGGREGATOR,
                    "criteria_selector": SELECTOR,
                    "verdict_mode": mode,
                    "sampling": {"temperature": 0.0, "max_new_tokens": JUDGE_TOKENS, "seed": 0},
                },
                "pairing": pairing,
                "batch_size": BATCH,
            },
        }
    )


def pool_stats(pools: PoolSet) -> dict[str, dict[str, float]]:
    """Calls, items and busy seconds finished so far, per model, summed over its replicas."""
    totals = {}
    for name, pool in pools.pools.items():
        stats = ray.get([a.stats.remote() for a in pool.actors])
        totals[name] = {key: sum(s[key] for s in stats) for key in ("calls", "items", "busy_s")}
    return totals


def run_variant(config: MoaaConfig, directory: Path, pools: PoolSet) -> dict[str, Any]:
    """Run the stage's own load/batches/write on pools already up; what its engines did meanwhile.

    Like ``bench_orchestration.time_stage``, but the pools outlive the run (the variants share
    them) and their stats are read as differences, so every figure is this run's own.
    """
    assert config.preferences is not None
    stage = PreferenceStage(config, config.preferences, RunDir(directory), "preferences", (0, 1))
    states, _ = stage.load()
    before = pool_stats(pools)
    started = time.monotonic()
    for batch in stage.batches(states, pools):
        stage.write(batch)
    wall_s = time.monotonic() - started
    after = pool_stats(pools)
    used = {
        name: {key: after[name][key] - before[name][key] for key in after[name]} for name in after
    }
    kept, dropped = stage.stage.read(), stage.dropped.read()
    rows = (kept.to_pylist() if kept is not None else []) + (
        dropped.to_pylist() if dropped is not None else []
    )
    pairs = [json.loads(row["stats"])["pairs"] for row in rows]
    judging = config.preferences.judging
    assert judging is not None
    audit = stage.audit.read()
    return {
        "prompts": len(states),
        "wall_s": wall_s,
        "stats": used,
        "pairs_judged": sum(pairs),
        "pairs_kept": kept.num_rows if kept is not None else 0,
        "kept": kept.to_pylist() if kept is not None else [],
        # The formula over each prompt's own judged pairs (samples are deduplicated first).
        "formula_calls": sum(
            count_judge_calls(
                p,
                len(judging.judges),
                with_aggregator=judging.aggregator_judge is not None,
                with_criteria_selection=judging.criteria_selector is not None,
            )
            for p in pairs
        ),
        "audit": audit.to_pylist() if audit is not None else [],
    }


def role_totals(stats: dict[str, dict[str, float]], key: str) -> dict[str, float]:
    """A stat summed over each role's models."""
    return {role: sum(stats[m][key] for m in models) for role, models in ROLES.items()}


def measure_simulated(directory: Path, quick: bool) -> dict:
    """Judge requests and engine calls per prompt and per DPO pair kept, vs the formula."""
    prompts = SIZES["simulated_prompts"][not quick]
    models = simulated_models([POLICY, SELECTOR, *JUDGES, JUDGE_AGGREGATOR], 1, {})
    inputs = {"path": write_prompts(directory, prompts)}
    figures: dict[str, Any] = {"simulated_prompts": prompts}
    match = True
    with PoolSet(MoaaConfig.model_validate({"models": models}).models) as pools:
        pools.start(list(models))  # up before the first variant, so its stats are all its own
        for mode, pairing in VARIANTS:
            config = judging_config(models, inputs, mode, pairing)
            run = run_variant(config, directory / f"sim-{mode}-{pairing}", pools)
            items, calls = role_totals(run["stats"], "items"), role_totals(run["stats"], "calls")
            requests, engine_calls = sum(items.values()), sum(calls.values())
            match &= requests == run["formula_calls"]
            kept = max(run["pairs_kept"], 1)
            v = f"sim_{mode}_{pairing}"
            figures |= {
                f"{v}_requests_per_prompt": round(requests / prompts, 2),
                f"{v}_formula_per_prompt": round(run["formula_calls"] / prompts, 2),
                **{f"{v}_{r}_requests_per_prompt": round(n / prompts, 2) for r, n in items.items()},
                f"{v}_engine_calls_per_prompt": round(engine_calls / prompts, 2),
                **{
                    f"{v}_{r}_engine_calls_per_prompt": round(n / prompts, 2)
                    for r, n in calls.items()
                },
                f"{v}_pairs_kept": run["pairs_kept"],
                f"{v}_requests_per_pair_kept": round(requests / kept, 2),
                f"{v}_engine_calls_per_pair_kept": round(engine_calls / kept, 2),
            }
    figures["calls_match_formula"] = match
    return figures


def generated_tokens(audit: list[dict], config: MoaaConfig) -> tuple[int, int, int]:
    """Tokens in the judges' and the aggregator judge's raw outputs, by each model's tokenizer.

    Returns:
        (tokens with each output capped at ``JUDGE_TOKENS``, tokens as re-tokenized, outputs whose
        re-tokenization exceeds the cap). A random model's output holds partial UTF-8 byte tokens
        that decode to U+FFFD and re-tokenize to 3 tokens each, so re-tokenizing can overcount; no
        engine generates more than the cap, so the capped count is the figure.
    """
    from tokenizers import Tokenizer  # the fast tokenizer itself: no 10 s transformers import

    from moaa_ray.tiny_models import resolve_model_path

    tokenizers: dict[str, Any] = {}
    capped = retokenized = over_cap = 0
    for row in audit:
        if row["raw"] is None:
            continue
        model = JUDGE_AGGREGATOR if row["judge"] == "aggregator" else row["judge"]
        if model not in tokenizers:
            path = resolve_model_path(config.models[model].path)
            tokenizers[model] = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
        count = len(tokenizers[model].encode(row["raw"], add_special_tokens=False).ids)
        capped += min(count, JUDGE_TOKENS)
        retokenized += count
        over_cap += count > JUDGE_TOKENS
    return capped, retokenized, over_cap


def measure_tiny(directory: Path, quick: bool) -> dict:
    """Generated judge tokens and stage wall time per judged pair, text vs logprob verdicts.

    Quick mode runs round robin only (judge tokens per judged pair do not depend on the pairing:
    every pair costs the same requests); the full run adds anchor pairing.
    """
    prompts = SIZES["tiny_prompts"][not quick]
    models = tiny_models()
    inputs = {"path": str(DEMO_PROMPTS), "limit": prompts}
    pairings = PAIRINGS[:1] if quick else PAIRINGS
    figures: dict[str, Any] = {"tiny_prompts": prompts, "judge_max_new_tokens": JUDGE_TOKENS}
    runs = {}
    with PoolSet(MoaaConfig.model_validate({"models": models}).models) as pools:
        started = pools.start(list(models))
        hello = [[{"role": "user", "content": "Hello"}]]
        for pool in started.values():  # warm up every engine's first generate and forward pass
            pool.chat(hello, SamplingParams(max_new_tokens=2))
            pool.collect(pool.submit("choice_logprobs", hello, "Verdict: ", ["A", "B"]))
        for pairing in pairings:
            for mode in VERDICT_MODES:
                config = judging_config(models, inputs, mode, pairing)
                run = run_variant(config, directory / f"tiny-{mode}-{pairing}", pools)
                runs[mode, pairing] = run
                pairs, requests = max(run["pairs_judged"], 1), max(len(run["audit"]), 1)
                tokens, retokenized, over_cap = generated_tokens(run["audit"], config)
                busy = role_totals(run["stats"], "busy_s")
                v = f"tiny_{mode}_{pairing}"
                figures |= {
                    f"{v}_judge_tokens_per_pair": round(tokens / pairs, 1),
                    f"{v}_judge_tokens_per_request": round(tokens / requests, 1),
                    f"{v}_retokenized_tokens_per_request": round(retokenized / requests, 1),
                    f"{v}_outputs_over_cap_when_retokenized": over_cap,
                    f"{v}_pairs_judged": run["pairs_judged"],
                    f"{v}_pairs_kept": run["pairs_kept"],
                    f"{v}_wall_s": round(run["wall_s"], 2),
                    f"{v}_wall_s_per_pair": round(run["wall_s"] / pairs, 3),
                    f"{v}_judge_busy_s_per_pair": round(
                        (busy["judges"] + busy["aggregator"]) / pairs, 3
                    ),
                }
    text = runs["text", "round_robin"]["audit"]
    figures["tiny_text_abstain_rate"] = round(
        sum(r["verdict"] is None for r in text) / max(len(text), 1), 3
    )
    figures["logprob_audit_raw_is_null"] = all(
        r["raw"] is None and r["p_a"] is not None
        for pairing in pairings
        for r in runs["logprob", pairing]["audit"]
    )
    for pairing in pairings:
        text_s = figures[f"tiny_text_{pairing}_wall_s_per_pair"]
        logprob_s = figures[f"tiny_logprob_{pairing}_wall_s_per_pair"]
        figures[f"logprob_speedup_vs_text_{pairing}"] = round(text_s / max(logprob_s, 1e-9), 2)
        text_busy = figures[f"tiny_text_{pairing}_judge_busy_s_per_pair"]
        logprob_busy = figures[f"tiny_logprob_{pairing}_judge_busy_s_per_pair"]
        figures[f"logprob_judge_busy_speedup_vs_text_{pairing}"] = round(
            text_busy / max(logprob_busy, 1e-9), 2
        )
    figures["logprob_speedup_vs_text"] = figures["logprob_speedup_vs_text_round_robin"]
    return figures


def toy_config(prompts: int, pairing: str) -> MoaaConfig:
    """The toy task's preference stage as configured, on its first ``prompts`` DPO prompts."""
    return load_config(
        TOY_CONFIG,
        [
            f"preferences.inputs.0.path={TOY_PROMPTS}",  # whatever the working directory
            f"preferences.inputs.0.limit={prompts}",
            f"preferences.pairing={pairing}",
        ],
    )


def chosen_correct(kept: list[dict]) -> list[bool]:
    """For each kept pair the verifier splits (one correct answer, one wrong): is the chosen right?

    Pairs of two correct or two wrong answers say nothing about the judges' ranking, so they are
    left out rather than counted as right or wrong.
    """
    outcomes = []
    for row in kept:
        chosen, rejected = (verify(row["prompt"], row[side][0]["content"]) for side in SIDES)
        if chosen is not None and rejected is not None and chosen != rejected:
            outcomes.append(chosen)
    return outcomes


def anchor_agreement(anchor: list[dict], round_robin: list[dict]) -> tuple[int, int]:
    """How often round robin's scores rank anchor's (chosen, rejected) the same way.

    Only prompts both pairings keep a pair for, with the same samples, are compared (anchor judges
    k - 1 of round robin's k(k - 1)/2 pairs of the same k distinct samples). A tie in round robin's
    scores disagrees: round robin would not have preferred anchor's chosen sample.

    Returns:
        (prompts compared, prompts where round robin scores anchor's chosen sample above its
        rejected one).
    """
    ranked = {row["row_id"]: row for row in round_robin}
    compared = agreed = 0
    for row in anchor:
        other = ranked.get(row["row_id"])
        if other is None or other["samples"] != row["samples"]:
            continue
        chosen, rejected = (row["samples"].index(row[side][0]["content"]) for side in SIDES)
        compared += 1
        agreed += other["scores"][chosen] > other["scores"][rejected]
    return compared, agreed


def measure_toy(directory: Path, quick: bool) -> dict:
    """Round robin against anchor pairing on the toy task: pairs kept, accuracy, judge cost."""
    prompts = SIZES["toy_prompts"][not quick]
    configs = {pairing: toy_config(prompts, pairing) for pairing in PAIRINGS}
    prefs = configs[PAIRINGS[0]].preferences
    assert prefs is not None and prefs.judging is not None
    judge_models = prefs.judging.models()
    figures: dict[str, Any] = {"toy_prompts": prompts, "toy_judges": len(prefs.judging.judges)}
    runs, match = {}, True
    with PoolSet(configs[PAIRINGS[0]].models) as pools:
        pools.start([prefs.policy, *judge_models])  # up before the first run: its stats are its own
        for pairing, config in configs.items():
            run = runs[pairing] = run_variant(config, directory / f"toy-{pairing}", pools)
            requests = sum(run["stats"][m]["items"] for m in judge_models)
            match &= requests == run["formula_calls"]
            outcomes = chosen_correct(run["kept"])
            figures |= {
                f"toy_{pairing}_pairs_kept": run["pairs_kept"],
                f"toy_{pairing}_split_pairs": len(outcomes),
                f"toy_{pairing}_pairs_chosen_correct_rate": share(sum(outcomes), len(outcomes)),
                f"toy_{pairing}_pairs_judged_per_prompt": round(run["pairs_judged"] / prompts, 2),
                f"toy_{pairing}_judge_requests_per_prompt": round(requests / prompts, 2),
            }
    compared, agreed = anchor_agreement(runs["anchor"]["kept"], runs["round_robin"]["kept"])
    figures |= {
        "toy_calls_match_formula": match,
        "toy_agreement_prompts": compared,
        "toy_anchor_agreement_with_round_robin": share(agreed, compared),
        "toy_logprob_vs_text": "not measurable: function judges have no log-probabilities",
    }
    return figures


def measure(quick: bool) -> dict:
    """Every judging figure; starts (and shuts down) a local Ray cluster."""
    figures: dict[str, Any] = {
        "setup": (
            f"preference stage, K={NUM_SAMPLES} samples, {len(JUDGES)} judges in both orders +"
            f" aggregator judge + criteria selector, {BATCH} prompts per batch; simulated engines"
            " (no latency) for calls, tiny hf models on CPU for tokens and wall time; toy task"
            " (configs/toy-addition.yaml, text verdicts) for pair accuracy and pairing agreement"
        ),
        "quick": quick,
        "num_samples": NUM_SAMPLES,
        "num_judges": len(JUDGES),
    }
    with tempfile.TemporaryDirectory() as tmp:
        # Room for the tiny models' actors (0.5 CPU each) on a small machine, as the demo does.
        connect(MoaaConfig.model_validate({"models": {}, "ray": {"num_cpus": 8}}))
        try:
            figures |= measure_simulated(Path(tmp), quick)
            figures |= measure_tiny(Path(tmp), quick)
            figures |= measure_toy(Path(tmp), quick)
        finally:
            ray.shutdown()
    return figures


def plot(figures: dict, path: Path) -> None:
    """Judge requests per DPO pair kept (simulated), generated tokens per judged pair (tiny) and,
    on the toy task, how often each pairing's chosen answer is the correct one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{mode}\n{pairing.replace('_', ' ')}" for mode, pairing in VARIANTS]
    keys = [f"{mode}_{pairing}" for mode, pairing in VARIANTS]
    fig, (calls_ax, tokens_ax, toy_ax) = plt.subplots(
        1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [2, 2, 1]}
    )
    width = 0.4
    xs = range(len(keys))
    requests = [figures[f"sim_{k}_requests_per_pair_kept"] for k in keys]
    engine_calls = [figures[f"sim_{k}_engine_calls_per_pair_kept"] for k in keys]
    calls_ax.bar([x - width / 2 for x in xs], requests, width, label="judge requests")
    calls_ax.bar([x + width / 2 for x in xs], engine_calls, width, label="batched engine calls")
    calls_ax.set_xticks(list(xs), names)
    calls_ax.set_ylabel("per DPO pair kept")
    calls_ax.set_title("Judge calls (simulated engines)")
    calls_ax.set_ylim(0, max(requests) * 1.3)  # room for the legend
    calls_ax.legend(fontsize="small")
    tokens = [figures.get(f"tiny_{k}_judge_tokens_per_pair") for k in keys]  # quick: no anchor
    tokens_ax.bar(names, [t or 0 for t in tokens], color="tab:green")
    tokens_ax.set_ylim(0, max([t or 0 for t in tokens] + [1]) * 1.15)
    for x, value in zip(xs, tokens, strict=True):
        label = "not run" if value is None else f"{value:g}"
        tokens_ax.annotate(label, (x, value or 0), ha="center", va="bottom")
    tokens_ax.set_ylabel("generated tokens per judged pair")
    tokens_ax.set_title(f"Judge tokens (tiny models, max {figures['judge_max_new_tokens']}/call)")
    rates = [100 * (figures[f"toy_{p}_pairs_chosen_correct_rate"] or 0) for p in PAIRINGS]
    bars = toy_ax.bar([p.replace("_", " ") for p in PAIRINGS], rates, color="tab:purple")
    toy_ax.bar_label(bars, fmt="%.1f")
    toy_ax.set_ylim(0, 110)
    toy_ax.set_ylabel("chosen answer correct (% of split pairs)")
    agreement = figures["toy_anchor_agreement_with_round_robin"] or 0
    toy_ax.set_title("Toy task (text verdicts)")
    toy_ax.set_xlabel(f"anchor's pick agrees with\nround robin's ranking: {100 * agreement:.0f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
