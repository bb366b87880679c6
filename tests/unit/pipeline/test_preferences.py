"""The preference stage's files without a cluster: what a batch writes, and the statistics read back."""

import pyarrow as pa

from moaa_ray.config import PreferencesConfig
from moaa_ray.core.tournament import new_tournament, record_judgment, record_samples
from moaa_ray.pipeline import preferences
from moaa_ray.runs.rundir import StageDir

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
    }
    assert "verifier" not in preferences._stage_stats(stage, dropped, audit, PREFS, None)
