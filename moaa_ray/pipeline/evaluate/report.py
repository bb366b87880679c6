"""The evaluation report a person reads: ``report.md`` with a table per benchmark, ``scores.png``.

Built from evaluation results (``results.json``:
:func:`moaa_ray.pipeline.evaluate.results.benchmark_results` per judged benchmark,
:func:`~moaa_ray.pipeline.evaluate.results.graded_results` per graded-only MT-Bench one,
:func:`~moaa_ray.pipeline.evaluate.results.verified_results` per verified one), one per evaluated
model: the starting model, the SFT model and each DPO round's when ``moaa run`` evaluates every
round (:func:`evaluated_models`), else the one evaluated model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from moaa_ray.config import MoaaConfig
from moaa_ray.core.winrates import LC_FALLBACK_LABEL
from moaa_ray.stages.layout import BASE, EVALUATE, round_folder

Evaluation = tuple[str, dict]  # (label, results.json's content)


def evaluated_models(config: MoaaConfig) -> list[tuple[str, str]]:
    """The models ``moaa run`` evaluates before the final one (``evaluate.every_round``), in the
    order it trains them: ``(label, folder)``, whose ``<folder>/evaluate/`` under the run directory
    holds the model's results.

    The starting model (``start``, ``base/``) when the run trains from one (the SFT model or the
    preference policy), the SFT model (``SFT``, ``round-0/``) when it trains one, and each DPO
    round's model but the last (``DPO round <r>``, ``round-<r>/``): the last one is the final model,
    evaluated in ``evaluate/``. The orchestrator evaluates exactly these, so the report and the run
    agree on what was evaluated where.
    """
    if config.evaluate is None or not config.evaluate.every_round:
        return []
    start = [("start", BASE)] if config.sft or config.preferences else []
    sft = [("SFT", round_folder(0))] if config.sft else []
    rounds = [(f"DPO round {r}", round_folder(r)) for r in range(1, config.iterations)]
    return start + sft + rounds


def earlier_evaluations(run_root: Path, models: list[tuple[str, str]]) -> list[Evaluation]:
    """The results of the given models (:func:`evaluated_models`) that were evaluated, in order,
    each labelled by its model.

    Only the current run's models are asked for: a rerun with fewer iterations, without SFT or
    without ``every_round`` leaves earlier runs' results in the run directory.
    """
    found = []
    for label, folder in models:
        path = run_root / folder / EVALUATE / "results.json"
        if path.exists():
            found.append((label, json.loads(path.read_text())))
    return found


def _number(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _bt(result: dict) -> str:
    bt = result.get("bt")
    if not bt:
        return "–"
    text = f"{_number(bt['score'])} ({_number(bt['lower'])} to {_number(bt['upper'])})"
    controlled = bt.get("style_controlled")
    if controlled:
        text += f"; style-controlled {_number(controlled['score'])}"
    return text


def _lc(result: dict) -> str:
    """The LC win rate, marked where it is a fallback, not the AlpacaEval leaderboard's."""
    fallback = " (fallback)" if _lc_fallback(result) else ""
    return _number(result["lc_win_rate"]) + fallback


def _lc_fallback(result: dict) -> bool:
    """Whether a result's LC win rate is a fallback, not alpaca_eval's ``length_controlled_v1``."""
    return result.get("lc_win_rate_kind") == "fallback"


def _comparison_table(name: str, evaluations: list[Evaluation]) -> list[str]:
    lines = [
        f"### {name}",
        "",
        "| model | judged | win / tie / loss | win rate | LC win rate | BT score (95% CI) | abstained |",
        "|---|---|---|---|---|---|---|",
    ]
    results = [(label, r["benchmarks"].get(name, {})) for label, r in evaluations]
    compared = [(label, result) for label, result in results if _compared(result)]
    for label, result in compared:
        record = f"{result['wins']} / {result['ties']} / {result['losses']}"
        lines.append(
            f"| {label} | {result['judged']} | {record} | {_number(result['win_rate'])} | "
            f"{_lc(result)} | {_bt(result)} | {result['abstained']} |"
        )
    baseline = compared[0][1]["baseline"]
    reasons = dict.fromkeys(
        r["lc_win_rate_fallback_reason"] for _, r in compared if _lc_fallback(r)
    )
    lc_notes = [f"{LC_FALLBACK_LABEL}: {reason}." for reason in reasons]
    notes = [
        f"Against `{baseline}`; ties count half a win.",
        *lc_notes,
        *_style_pool_note(compared),
        *_sources_note(compared[-1][1]),
    ]
    return [*lines, "", *notes, ""]


FIGURE_NAMES = {
    "win_rate": "win rate",
    "lc_win_rate": "LC win rate",
    "bt": "BT score",
    "style_controlled": "style-controlled score",
    "mt_bench": "MT-Bench grades",
    "accuracy": "accuracy",
}


def _sources_note(result: dict) -> list[str]:
    """Whose each figure of a benchmark's table is (``results.json``'s ``sources``), one line."""
    sources = result.get("sources") or {}
    named = [f"{FIGURE_NAMES.get(key, key)}: {source}" for key, source in sources.items()]
    return [f"Whose figures: {'; '.join(named)}."] if named else []


def _style_pool_note(compared: list[tuple[str, dict]]) -> list[str]:
    """Which models the style-controlled scores were fitted jointly over, when there are some."""
    pools = [(r.get("bt") or {}).get("style_control_pool") for _, r in compared]
    fits = list(dict.fromkeys(", ".join(pool) + " and the baseline" for pool in pools if pool))
    if len(fits) == 1:
        return [
            f"Style-controlled scores: one joint fit over {fits[0]}, as arena-hard-auto's "
            "`show_result.py --style-control` fits every model it judged."
        ]
    if fits:
        return [
            f"Style-controlled scores: {len(fits)} separate joint fits, over "
            f"{'; over '.join(fits)}; scores of different fits do not compare."
        ]
    return []


def _graded_only(name: str, evaluations: list[Evaluation]) -> list[str]:
    """A benchmark the grader alone rates (MT-Bench with ``baseline: none``): its grades."""
    grades = _grades_table(name, evaluations) or ["No answer was graded.", ""]
    sources = _sources_note(evaluations[-1][1]["benchmarks"].get(name, {}))
    note = "No baseline: single grading only, no win rates."
    return [f"### {name}", "", *grades, note, *sources, ""]


def _verified(results: list[dict]) -> bool:
    """Whether a benchmark's results are the verifier's (exact match), not the judges'."""
    return any(result.get("format") == "verified" for result in results)


def _compared(result: dict) -> bool:
    """Whether a benchmark's results compare the model with a baseline: a graded-only or a
    verified benchmark has none."""
    return result.get("baseline") is not None


def _percent(fraction: float | None) -> str:
    return _number(None if fraction is None else 100 * fraction)


def _interval(bounds: list[float] | None) -> str:
    return "–" if bounds is None else f"{_percent(bounds[0])}–{_percent(bounds[1])}"


def _accuracy_table(name: str, evaluations: list[Evaluation]) -> list[str]:
    lines = [
        f"### {name}",
        "",
        "| model | accuracy (%) | 95% interval | samples per question | first answer right / "
        "verifiable | answered |",
        "|---|---|---|---|---|---|",
    ]
    for label, results in evaluations:
        result = results["benchmarks"][name]
        lines.append(
            f"| {label} | {_percent(result['accuracy'])} | {_interval(result.get('accuracy_ci'))} "
            f"| {result.get('samples_per_question', 1)} | {result['correct']} / "
            f"{result['verifiable']} | {result['total']} |"
        )
    note = (
        "Exact match, checked by the verifier; answers it cannot check are not counted. With "
        "several samples per question the accuracy is their mean (avg@n), and the interval is "
        "over questions; with one, Wilson's."
    )
    sources = _sources_note(evaluations[-1][1]["benchmarks"].get(name, {}))
    return [*lines, "", note, *sources, ""]


def _grades_table(name: str, evaluations: list[Evaluation]) -> list[str]:
    graded = [(label, r["benchmarks"][name]["mt_bench"]) for label, r in evaluations]
    graded = [(label, summary) for label, summary in graded if summary]
    if not graded:
        return []
    categories = sorted({c for _, summary in graded for c in summary.get("per_category", {})})
    turns = sorted({t for _, summary in graded for t in summary["per_turn"]}, key=int)
    header = ["model", *(f"turn {t}" for t in turns), "overall", *categories]
    lines = [
        f"MT-Bench single grades (1-10) on {name}:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for label, summary in graded:
        cells = [
            label,
            *(_number(summary["per_turn"].get(t), 2) for t in turns),
            _number(summary["overall"], 2),
            *(_number(summary.get("per_category", {}).get(c), 2) for c in categories),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def render_report(evaluations: list[Evaluation]) -> str:
    """The report's Markdown: a table per benchmark, rows per evaluated model, oldest first."""
    if not evaluations:
        raise ValueError("no evaluation to report")
    names = list(dict.fromkeys(n for _, r in evaluations for n in r["benchmarks"]))
    lines = ["# Evaluation report", ""]
    shared = sorted({j for _, r in evaluations for j in r.get("shared_judges", [])})
    if shared:
        lines += [
            f"**Self-judged:** {', '.join(shared)} also labelled the training pairs, so these "
            "scores may favour the model (self-preference). Judge with independent models for "
            "numbers to publish.",
            "",
        ]
    for name in names:
        subset = [(label, r) for label, r in evaluations if name in r["benchmarks"]]
        results = [r["benchmarks"][name] for _, r in subset]
        if _verified(results):
            lines += _accuracy_table(name, subset)
        elif any(_compared(result) for result in results):
            lines += _comparison_table(name, subset) + _grades_table(name, subset)
        else:
            lines += _graded_only(name, subset)
    lines += ["![scores per evaluated model](scores.png)", ""]
    return "\n".join(lines)


def plot_scores(evaluations: list[Evaluation], path: Path) -> None:
    """One panel per benchmark and a point per model: win rate, LC win rate, BT score (with CI) and
    MT-Bench (a graded-only benchmark: MT-Bench alone), or for a verified benchmark a bar of its
    accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(n for _, r in evaluations for n in r["benchmarks"]))
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    labels = [label for label, _ in evaluations]
    for axis, name in zip(axes[0], names, strict=True):
        rows = [r["benchmarks"].get(name, {}) for _, r in evaluations]
        if _verified(rows):
            accuracy = [_nan(row.get("accuracy")) * 100 for row in rows]
            axis.bar(labels, accuracy, label="accuracy (%)")
        else:
            _plot_judged(axis, labels, rows)
        axis.set_title(name)
        axis.set_ylim(0, 100)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_judged(axis, labels: list[str], rows: list[dict]) -> None:
    """MT-Bench × 10 per model, and where a baseline was compared with (not on a graded-only
    benchmark), win rate, LC win rate and BT score (with CI) around 50."""
    if any(_compared(row) for row in rows):
        _plot_win_rates(axis, labels, rows)
    grades = [(row.get("mt_bench") or {}).get("overall") for row in rows]
    if any(g is not None for g in grades):
        axis.plot(labels, [_nan(g) * 10 for g in grades], marker="^", label="MT-Bench × 10")


def _plot_win_rates(axis, labels: list[str], rows: list[dict]) -> None:
    """Win rate, LC win rate and BT score (with CI) per model, and the baseline's 50."""
    lc_title = LC_FALLBACK_LABEL if any(_lc_fallback(row) for row in rows) else "LC win rate"
    for key, title in (("win_rate", "win rate"), ("lc_win_rate", lc_title)):
        values = [_nan(row.get(key)) for row in rows]
        axis.plot(labels, values, marker="o", label=title)
    bts = [row.get("bt") or {} for row in rows]
    if any(bts):
        scores = [_nan(bt.get("score")) for bt in bts]
        errors = [
            [s - _nan(bt.get("lower")) for s, bt in zip(scores, bts, strict=True)],
            [_nan(bt.get("upper")) - s for s, bt in zip(scores, bts, strict=True)],
        ]
        axis.errorbar(labels, scores, yerr=errors, marker="s", capsize=3, label="BT score")
    axis.axhline(50, color="grey", linewidth=0.8, linestyle=":")


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def write_report(directory: Path, evaluations: list[Evaluation]) -> Path:
    """Write ``report.md`` and ``scores.png`` into ``directory``; returns the report's path."""
    directory.mkdir(parents=True, exist_ok=True)
    plot_scores(evaluations, directory / "scores.png")
    path = directory / "report.md"
    path.write_text(render_report(evaluations))
    return path
