"""Whose each evaluation figure is: a benchmark's own (named with the code and version it follows),
or the project's, which no leaderboard reports. ``results.json`` carries them as ``sources`` per
benchmark, and ``report.md`` prints them under each table.
"""

from __future__ import annotations

from moaa_ray.core.eval_question import Judge
from moaa_ray.core.winrates import LC_FALLBACK_LABEL, LcKind

OWN_PAIRWISE_MT_BENCH = (
    "moaa_ray's own: its judges' verdicts in both orders, not FastChat's pairwise-baseline "
    "(GPT-4's pair prompts, a tie where the two orders disagree)"
)
"""What MT-Bench's win rates against a baseline are; its grades are FastChat's single grading."""

WIN_RATE = {
    "alpaca_eval": "AlpacaEval 2's (alpaca_eval 0.6.6, weighted_alpaca_eval_gpt4_turbo): the mean "
    "preference for the model",
    "arena_hard": "moaa_ray's: the share of Arena-Hard games won, ties half (Arena-Hard v0.1 "
    "reports the BT score)",
    "ensemble": "moaa_ray's: the judging ensemble's verdicts in both orders, ties half",
}
LC_WIN_RATE = "AlpacaEval 2's (alpaca_eval 0.6.6, length_controlled_v1)"
ARENA_HARD_BT = (
    "Arena-Hard v0.1's (arena-hard-auto show_result.py: Bradley-Terry over the 5-level games, "
    "bootstrap)"
)
OWN_BT = (
    "moaa_ray's: Bradley-Terry with one virtual tie per pair (a prior that keeps an unbeaten model "
    "finite and pulls every score toward 50), no benchmark's figure"
)
STYLE_CONTROLLED = (
    "Arena-Hard v0.1's style control (show_result.py --style-control), fitted jointly over "
    "bt.style_control_pool"
)
MT_BENCH_GRADES = "MT-Bench's (FastChat 0.2.36 llm_judge, single grading)"
ACCURACY = "moaa_ray's: the verifier's exact match, the mean over each question's sampled answers"


def judged_sources(judge: Judge, lc_kind: LcKind, style_control: bool, graded: bool) -> dict:
    """Whose each figure of a benchmark compared with a baseline is.

    Args:
        judge: who judged its pairs.
        lc_kind: what its LC win rate is.
        style_control: whether it has a style-controlled score (Arena-Hard only).
        graded: whether the grader rated its answers too (MT-Bench).
    """
    sources = {
        "win_rate": OWN_PAIRWISE_MT_BENCH if graded else WIN_RATE[judge],
        "lc_win_rate": LC_WIN_RATE if lc_kind == "length_controlled_v1" else LC_FALLBACK_LABEL,
        "bt": ARENA_HARD_BT if judge == "arena_hard" else OWN_BT,
    }
    if style_control:
        sources["style_controlled"] = STYLE_CONTROLLED
    if graded:
        sources["mt_bench"] = MT_BENCH_GRADES
    return sources
