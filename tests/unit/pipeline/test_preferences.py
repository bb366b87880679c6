"""The preference stage's files without a cluster: what a batch writes, and the statistics read back."""

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from moaa_ray.config import JudgingConfig, PreferencesConfig
from moaa_ray.core.general_preference import mean_score_differences
from moaa_ray.core.judging import parse_judge_prompt
from moaa_ray.core.tournament import new_tournament, record_judgment, record_samples
from moaa_ray.pipeline import preferences
from moaa_ray.pipeline.judging import AggregateStep, JudgeStep
from moaa_ray.stages.rundir import StageDir
from tests.support.fakes import FakePool

PROMPT = [{"role": "user", "content": "What is 2 + 2?"}]
PREFS = PreferencesConfig(
    inputs=[{"path": "unused.jsonl"}], policy="p", num_samples=2, judging={"judges": ["j"]}
)


def verify(messages, answer):
    return answer == "4" if messages[-1]["content"] == "What is 2 + 2?" else None


def tournament(row_id, samples, verdicts):
    """A judged prompt: judge ``j``'s verdict on samples (0, 1) per order."""
    state = new_tournament(row_id, PROMPT, "src")
    record_samples(state, samples)
    state["criteria"] = ["accuracy"]
    for order, verdict in verdicts.items():
        record_judgment(state, "j", (0, 1), order, text=f"Verdict: {verdict}")
    return state


def test_verifier_stats_are_read_from_every_pair_drop_and_judgment_written(tmp_path, monkeypatch):
    monkeypatch.setattr(preferences, "count_rows", lambda *args, **kwargs: None)
    stage = StageDir(tmp_path / "preferences")
    dropped, audit = StageDir(stage.path / "dropped"), StageDir(stage.path / "judgments")
    old_schema = pa.schema(
        [("row_id", pa.string()), ("reason", pa.string()), ("stats", pa.string())]
    )
    dropped.write_shard([{"row_id": "old", "reason": "all tied", "stats": "{}"}], old_schema)
    batch = [
        tournament("kept", ["4", "5"], {"ab": "A", "ba": "B"}),  # both orders pick "4"
        tournament("biased", ["4", "6"], {"ab": "A", "ba": "A"}),  # position bias: dropped
        tournament("single", ["4"], {}),  # one sample: dropped before judging
    ]
    preferences._write_batch(batch, PREFS, stage, dropped, audit)
    assert {r["row_id"]: r["samples"] for r in dropped.read().to_pylist()} == {
        "old": None,  # written before dropped prompts kept their samples
        "biased": ["4", "6"],
        "single": ["4"],
    }
    stats = preferences._stage_stats(stage, dropped, audit, PREFS, verify)
    assert stats["pairs_kept"] == 1 and sum(stats["prompts_dropped"].values()) == 3
    assert stats["verifier"] == {
        "verifiable_prompts": 3,
        "prompts_with_correct_and_wrong": 0.6667,
        "verifiable_pairs": 1,
        "chosen_correct": 1.0,
        "rejected_correct": 0.0,
        "pair_accuracy": 1.0,
        "comparisons": 4,  # both orders of "kept" and of "biased"
        "judge_agreement": {"j": 0.75},  # wrong once: "biased" in order ba
        "ensemble_agreement": 0.75,
        "split_pairs": 2,
        "judge_pair_agreement": {"j": 0.5},  # "biased" is a tie over both orders
        "ensemble_pair_agreement": 0.5,
    }
    assert "verifier" not in preferences._stage_stats(stage, dropped, audit, PREFS, None)


def prefers_four(method, conversation, *args):
    """A judge that writes which shown answer is "4"."""
    shown = parse_judge_prompt(conversation[-1]["content"])
    return [f"Four is right.\nVerdict: {'A' if shown.answer_a == '4' else 'B'}"]


def judge_and_write(tmp_path, monkeypatch, judging, pools):
    """Judge one prompt with samples "4" and "5" through the stage's steps; its written stats."""
    monkeypatch.setattr(preferences, "count_rows", lambda *args, **kwargs: None)
    prefs = PREFS.model_copy(update={"judging": JudgingConfig(**judging)})
    state = tournament("row", ["4", "5"], {})
    JudgeStep(pools, prefs.judging, "round_robin")([state])
    if prefs.judging.aggregator_judge:
        AggregateStep(pools[prefs.judging.aggregator_judge], prefs.judging, "round_robin")([state])
    stage = StageDir(tmp_path / "preferences")
    dropped, audit = StageDir(stage.path / "dropped"), StageDir(stage.path / "judgments")
    preferences._write_batch([state], prefs, stage, dropped, audit)
    return preferences._stage_stats(stage, dropped, audit, prefs, None), audit.read().to_pylist()


@pytest.mark.parametrize(("fallback", "pairs_kept"), [("judges_mean", 1), ("abstain", 0)])
def test_an_abstaining_aggregator_judge_is_replaced_by_the_judges_or_abstains(
    tmp_path, monkeypatch, fallback, pairs_kept
):
    pools = {"j": FakePool(prefers_four), "agg": FakePool(lambda m, c, *args: ["I am not sure."])}
    judging = {"judges": ["j"], "aggregator_judge": "agg", "aggregator_fallback": fallback}
    stats, audit = judge_and_write(tmp_path, monkeypatch, judging, pools)
    assert stats["pairs_kept"] == pairs_kept
    assert stats["aggregator_fallbacks"] == (2 if fallback == "judges_mean" else 0)
    assert stats["pair_abstain_rate"] == (0.0 if fallback == "judges_mean" else 1.0)
    assert [(r["judge"], r["verdict"]) for r in audit if r["order"] == "ab"] == [
        ("j", "A"),
        ("aggregator", None),
    ]


def test_logprob_verdicts_inside_the_tie_band_are_audited_as_ties(tmp_path, monkeypatch):
    pools = {"j": FakePool(lambda method, conversation, *args: [math.log(0.52), math.log(0.48)])}
    judging = {"judges": ["j"], "verdict_mode": "logprob", "tie_band": 0.05}
    stats, audit = judge_and_write(tmp_path, monkeypatch, judging, pools)
    assert [(r["verdict"], round(r["p_a"], 2)) for r in audit] == [("tie", 0.52)] * 2
    assert stats["pairs_kept"] == 0 and stats["abstain_rate"] == 0.0


def test_the_judges_cycle_is_written_with_the_pair_intact(tmp_path, monkeypatch):
    """P(0 > 1) = 0.9, P(1 > 2) = 0.7, P(2 > 0) = 0.6 from logprob verdicts in both orders: the
    pair's win probabilities keep the cycle; read as Bradley-Terry strengths
    (``win_probabilities: strengths``) it becomes transitive."""
    monkeypatch.setattr(preferences, "count_rows", lambda *args, **kwargs: None)
    state = new_tournament("cycle", PROMPT, "src")
    record_samples(state, ["a", "b", "c"])
    state["criteria"] = ["accuracy"]
    for pair, p_x in {(0, 1): 0.9, (1, 2): 0.7, (0, 2): 0.4}.items():
        record_judgment(state, "j", pair, "ab", p_a=p_x)
        record_judgment(state, "j", pair, "ba", p_a=1 - p_x)
    prefs = PREFS.model_copy(update={"num_samples": 3})
    written = {}
    for source in ("pairwise", "strengths"):
        stage = StageDir(tmp_path / source)
        dropped, audit = StageDir(stage.path / "dropped"), StageDir(stage.path / "judgments")
        update = {"win_probabilities": source}
        preferences._write_batch(
            [json.loads(json.dumps(state))], prefs.model_copy(update=update), stage, dropped, audit
        )
        (row,) = stage.read().to_pylist()
        assert row["preference_table"] is None
        written[source] = row["win_probabilities"]
    cycle = [[0.5, 0.9, 0.4], [0.1, 0.5, 0.7], [0.6, 0.3, 0.5]]
    assert np.allclose(written["pairwise"], cycle)
    strengths = np.array(written["strengths"])
    logit = np.log(strengths / (1 - strengths))
    assert logit[0, 1] + logit[1, 2] == pytest.approx(logit[0, 2])  # transitive: no cycle left


def test_a_pairwise_sources_table_is_written_with_its_pair_or_its_drop(tmp_path, monkeypatch):
    monkeypatch.setattr(preferences, "count_rows", lambda *args, **kwargs: None)
    prefs = PREFS.model_copy(update={"reward": "pairwise_ranker", "reward_model": "rm"})
    ranked, tied, scalar = (tournament(row, ["4", "5"], {}) for row in ("ranked", "tied", "scalar"))
    for state, table in ((ranked, [[0.0, 2.0], [-2.0, 0.0]]), (tied, [[0.0, 0.0], [0.0, 0.0]])):
        state["preference_table"], state["rewards"] = table, mean_score_differences(table)
    scalar["rewards"] = [1.0, 0.0]  # a scalar reward model's: no table
    stage = StageDir(tmp_path / "preferences")
    dropped, audit = StageDir(stage.path / "dropped"), StageDir(stage.path / "judgments")
    preferences._write_batch([ranked, tied, scalar], prefs, stage, dropped, audit)
    kept = {row["row_id"]: row["preference_table"] for row in stage.read().to_pylist()}
    assert kept == {"ranked": [[0.0, 2.0], [-2.0, 0.0]], "scalar": None}
    [drop] = dropped.read().to_pylist()
    assert (drop["row_id"], drop["reason"], drop["preference_table"]) == (
        "tied",
        "all samples tied",
        [[0.0, 0.0], [0.0, 0.0]],
    )
