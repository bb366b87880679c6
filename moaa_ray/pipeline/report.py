"""The evaluation report a person reads: ``report.md`` with a table per benchmark, ``scores.png``.

Built from evaluation results (``results.json``: :func:`moaa_ray.pipeline.evaluate.benchmark_results`
per judged benchmark, :func:`~moaa_ray.pipeline.evaluate.verified_results` per verified one), one per
evaluated model: the SFT model and each DPO round's when ``moaa run``
evaluates every round, else the one evaluated model.
"""

from __future__ import annotations

import math
from pathlib import Path

Evaluation = tuple[str, dict]  # (label, results.json's content)


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


def _comparison_table(name: str, evaluations: list[Evaluation]) -> list[str]:
    lines = [
        f"### {name}",
        "",
        "| model | judged | win / tie / loss | win rate | LC win rate | BT score (95% CI) | abstained |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, results in evaluations:
        result = results["benchmarks"].get(name)
        if result is None:
            continue
        record = f"{result['wins']} / {result['ties']} / {result['losses']}"
        lines.append(
            f"| {label} | {result['judged']} | {record} | {_number(result['win_rate'])} | "
            f"{_number(result['lc_win_rate'])} | {_bt(result)} | {result['abstained']} |"
        )
    baseline = next(
        r["benchmarks"][name]["baseline"] for _, r in evaluations if name in r["benchmarks"]
    )
    return [*lines, "", f"Against `{baseline}`; ties count half a win.", ""]


def _verified(results: list[dict]) -> bool:
    """Whether a benchmark's results are the verifier's (exact match), not the judges'."""
    return any(result.get("format") == "verified" for result in results)


def _percent(fraction: float | None) -> str:
    return _number(None if fraction is None else 100 * fraction)


def _accuracy_table(name: str, evaluations: list[Evaluation]) -> list[str]:
    lines = [
        f"### {name}",
        "",
        "| model | accuracy (%) | correct / verifiable | answered |",
        "|---|---|---|---|",
    ]
    for label, results in evaluations:
        result = results["benchmarks"][name]
        lines.append(
            f"| {label} | {_percent(result['accuracy'])} | "
            f"{result['correct']} / {result['verifiable']} | {result['total']} |"
        )
    note = "Exact match, checked by the verifier; answers it cannot check are not counted."
    return [*lines, "", note, ""]


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
        if _verified([r["benchmarks"][name] for _, r in subset]):
            lines += _accuracy_table(name, subset)
        else:
            lines += _comparison_table(name, subset) + _grades_table(name, subset)
    lines += ["![scores per evaluated model](scores.png)", ""]
    return "\n".join(lines)


def plot_scores(evaluations: list[Evaluation], path: Path) -> None:
    """One panel per benchmark and a point per model: win rate, LC win rate, BT score (with CI) and
    MT-Bench, or for a verified benchmark a bar of its accuracy."""
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
    """Win rate, LC win rate, BT score (with CI) and MT-Bench × 10 per model, around 50."""
    for key, title in (("win_rate", "win rate"), ("lc_win_rate", "LC win rate")):
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
    grades = [(row.get("mt_bench") or {}).get("overall") for row in rows]
    if any(g is not None for g in grades):
        axis.plot(labels, [_nan(g) * 10 for g in grades], marker="^", label="MT-Bench × 10")
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
