"""Arena-Hard style control fitted jointly over every model of a run, as the leaderboard fits it:
against the re-implementation of arena-hard-auto v0.1's ``show_result.py --style-control`` in
tests/support/arena_hard_auto.py, and through the evaluation stage of a run that evaluates several
models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moaa_ray.config import MoaaConfig
from moaa_ray.pipeline.evaluate.results import pooled_style_control
from moaa_ray.pipeline.evaluate.stage import EvaluationStage
from moaa_ray.stages.rundir import RunDir
from tests.support.synthetic_arena import synthetic_verdict

BASELINE = "gpt-4-0314"
# skill, and mean verbosity (the baseline's is 0.5): verdicts favour skill and verbosity.
MODELS = {"verbose": (0.2, 0.9), "plain": (0.3, 0.45), "terse": (-0.4, 0.15)}
QUESTIONS = 120


class CharacterEncoding:
    """Stands in for tiktoken's encoding: a token per character."""

    def encode(self, text, disallowed_special):
        return list(text)


def _answer(rng: np.random.RandomState, verbosity: float) -> str:
    """A markdown answer whose length, headers, list items and bold spans grow with verbosity."""
    parts = ["# Part\n"] * rng.poisson(0.5 + 2 * verbosity)
    parts += ["- item\n"] * rng.poisson(0.5 + 4 * verbosity)
    parts += ["Some **bold** words.\n"] * rng.poisson(0.5 + 3 * verbosity)
    parts.append("word " * rng.randint(10, int(30 + 300 * verbosity)))
    return "".join(parts)


def _pool(seed: int = 3) -> dict[str, list[dict]]:
    """Judged Arena-Hard rows per model, one judge, the same baseline answer per question."""
    rng = np.random.RandomState(seed)
    baseline = [_answer(rng, 0.5) for _ in range(QUESTIONS)]
    pool = {}
    for model, (skill, mean_verbosity) in MODELS.items():
        rows = []
        for q in range(QUESTIONS):
            verbosity = mean_verbosity + 0.3 * (rng.rand() - 0.5)
            advantage = skill + 3.0 * (verbosity - 0.5)
            games = [
                synthetic_verdict(rng, advantage, False),
                synthetic_verdict(rng, advantage, True),
            ]
            verdicts = [
                {"judge": "j", "game": game, "verdict": verdict, "raw": "", "attempts": 1}
                for game, verdict in zip((1, 2), games, strict=True)
            ]
            rows.append(
                {
                    "question_id": str(q),
                    "model_answers": [_answer(rng, verbosity)],
                    "baseline_answers": [baseline[q]],
                    "arena_verdicts": verdicts,
                }
            )
        pool[model] = rows
    return pool


@pytest.fixture(scope="module")
def oracle():
    pytest.importorskip("sklearn")
    pytest.importorskip("pandas")
    from tests.support import arena_hard_auto

    return arena_hard_auto


def _oracle_battles(oracle, pool: dict[str, list[dict]]):
    """arena-hard-auto's battles of the whole pool: every model's judgments and answer metadata in
    one table, as ``show_result.py`` reads every judgment file in its judge's directory."""
    import pandas as pd

    def metadata(answer: str) -> dict:
        return {"conv_metadata": {"token_len": len(answer), **oracle.markdown_counts(answer)}}

    judgments = pd.DataFrame(
        [
            {
                "question_id": row["question_id"],
                "model": model,
                "games": [{"score": v["verdict"]} for v in row["arena_verdicts"]],
            }
            for model, rows in pool.items()
            for row in rows
        ]
    )
    answers = {
        model: {row["question_id"]: metadata(row["model_answers"][-1]) for row in rows}
        for model, rows in pool.items()
    }
    first = next(iter(pool.values()))
    answers[BASELINE] = {row["question_id"]: metadata(row["baseline_answers"][-1]) for row in first}
    return oracle.judgments_to_battles(judgments, BASELINE, answers)


def test_style_control_is_arena_hard_autos_joint_fit_over_the_pool(oracle, length_encoding):
    length_encoding(CharacterEncoding)
    pool = _pool()

    ours = pooled_style_control(pool, BASELINE, bootstrap_rounds=1)
    ratings = oracle.style_controlled_ratings(_oracle_battles(oracle, pool), BASELINE)

    assert ours["style_control_pool"] == list(MODELS)
    assert ours["style_length_unit"] == "tiktoken gpt-3.5-turbo"
    theirs = {m: 100 / (1 + 10 ** ((ratings[BASELINE] - ratings[m]) / 400)) for m in MODELS}
    for model in MODELS:
        # scikit-learn's fit stops at its default tol=1e-4; ours is the converged optimum.
        assert ours["style_controlled_by_model"][model]["score"] == pytest.approx(
            theirs[model], abs=0.02
        )
    # Fitted one model at a time, as before, the same answers and verdicts score differently.
    alone = {
        model: pooled_style_control({model: rows}, BASELINE, 1)["style_controlled_by_model"][model]
        for model, rows in pool.items()
    }
    moved = [abs(alone[m]["score"] - theirs[m]) for m in MODELS]
    assert max(moved) > 1.0, moved


@pytest.mark.slow
def test_joint_style_controlled_intervals_are_arena_hard_autos(oracle, length_encoding):
    length_encoding(CharacterEncoding)
    pool = _pool()

    ours = pooled_style_control(pool, BASELINE, bootstrap_rounds=100)["style_controlled_by_model"]
    np.random.seed(42)  # what importing arena-hard-auto's utils_math.py does
    board = oracle.leaderboard(
        _oracle_battles(oracle, pool), BASELINE, num_rounds=100, style_control=True
    )

    for row in board.itertuples():
        if row.model != BASELINE:
            # The reference rounds to 2 decimals; its fits stop at scikit-learn's tol=1e-4.
            for key in ("score", "lower", "upper"):
                assert ours[row.model][key] == pytest.approx(getattr(row, key), abs=0.02)


def _run_config(tmp_path, rows: list[dict]) -> MoaaConfig:
    """A run that evaluates its starting model, its SFT model and its final model on one
    style-controlled Arena-Hard file with the rows' questions and baseline answers."""
    questions, answers = tmp_path / "arena.jsonl", tmp_path / "gpt-4-0314.jsonl"
    questions.write_text(
        "".join(json.dumps({"uid": r["question_id"], "prompt": "Q?"}) + "\n" for r in rows)
    )
    answers.write_text(
        "".join(
            json.dumps(
                {"question_id": r["question_id"], "choices": [{"turns": r["baseline_answers"]}]}
            )
            + "\n"
            for r in rows
        )
    )
    model = {"path": "tiny:llama-a", "engine": "simulated"}
    bench = {"path": str(questions), "baseline_answers_path": str(answers), "style_control": True}
    return MoaaConfig.model_validate(
        {
            "models": {"policy": model, "j": model},
            "sft": {"model": "policy", "data_path": str(questions)},
            "evaluate": {
                "model": "policy",
                "every_round": True,
                "bootstrap_rounds": 20,
                "judging": {"judges": ["j"]},
                "benchmarks": [bench],
            },
        }
    )


def _evaluate(config: MoaaConfig, run_dir, rows: list[dict]) -> dict:
    """The evaluation stage in ``run_dir`` with the given answers and verdicts written."""
    assert config.evaluate is not None
    stage = EvaluationStage(config, config.evaluate, RunDir(run_dir), "evaluate")
    states, _ = stage.load()
    for state, row in zip(states, rows, strict=True):
        state["model_answers"] = row["model_answers"]
        state["arena_verdicts"] = row["arena_verdicts"]
    stage.write(states)
    return stage.summarize()


def test_a_run_fits_style_control_jointly_over_every_model_it_evaluated(tmp_path, length_encoding):
    length_encoding(CharacterEncoding)
    verbose, plain, terse = _pool().values()
    config = _run_config(tmp_path, verbose)
    run = tmp_path / "run"

    start = _evaluate(config, run / "base", terse)["benchmarks"]["arena"]["bt"]
    _evaluate(config, run / "round-0", plain)
    final = _evaluate(config, run, verbose)["benchmarks"]["arena"]["bt"]

    # The first model evaluated had a pool of one; the final one's pool is the whole run.
    assert start["style_control_pool"] == ["policy"]
    assert final["style_control_pool"] == ["start", "SFT", "final"]
    joint = pooled_style_control({"start": terse, "SFT": plain, "final": verbose}, BASELINE, 20)
    assert final["style_controlled_by_model"] == joint["style_controlled_by_model"]
    assert final["style_controlled"] == joint["style_controlled_by_model"]["final"]
    assert start["style_controlled"] != final["style_controlled_by_model"]["start"]
    # The plain score is the model's own fit, as a lone evaluation of the same answers gives it.
    lone = _evaluate(config, tmp_path / "lone", verbose)["benchmarks"]["arena"]["bt"]
    assert lone["style_control_pool"] == ["policy"]
    assert [lone[k] for k in ("score", "lower", "upper")] == [
        final[k] for k in ("score", "lower", "upper")
    ]
    saved = json.loads((run / "evaluate" / "results.json").read_text())
    assert saved["benchmarks"]["arena"]["bt"] == final
    # The report shows every model's score from the joint fit, and names the pool.
    report = (run / "evaluate" / "report.md").read_text()
    for label in ("start", "SFT", "final"):
        score = final["style_controlled_by_model"][label]["score"]
        assert f"| {label} |" in report and f"style-controlled {score:.1f}" in report
    assert "one joint fit over start, SFT, final and the baseline" in report


def test_a_model_judged_by_other_judges_is_left_out_of_the_pool(tmp_path, length_encoding):
    length_encoding(CharacterEncoding)
    verbose, _, terse = _pool().values()
    config = _run_config(tmp_path, verbose)
    other_judge = [
        {**row, "arena_verdicts": [{**v, "judge": "k"} for v in row["arena_verdicts"]]}
        for row in terse
    ]
    run = tmp_path / "run"

    _evaluate(config, run / "base", other_judge)
    final = _evaluate(config, run, verbose)["benchmarks"]["arena"]["bt"]

    assert final["style_control_pool"] == ["final"]
    report = (run / "evaluate" / "report.md").read_text()
    assert "| start |" in report
    assert (
        "2 separate joint fits, over policy and the baseline; over final and the baseline" in report
    )
