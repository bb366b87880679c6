"""The preference stage end to end on a local Ray cluster with the real hf engine on tiny models."""

import json

import pyarrow.parquet as pq
import pytest
import yaml

from moaa_ray.config import load_config
from moaa_ray.pipeline.preferences import build_preferences
from moaa_ray.stages.rundir import RunDir
from moaa_ray.stages.runner import EXIT_CODES

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def make_config(tmp_path, judging=(), **preferences):
    judging = dict(judging)
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"Tell me about topic {i}."} for i in range(4)] + [{"prompt": 7}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = {"engine": "hf", "num_cpus": 0.25, "max_batch_size": 8}
    raw = {
        "run_dir": str(tmp_path / "run"),
        "models": {
            "policy": {"path": "tiny:llama-a", **model},
            "j1": {"path": "tiny:qwen2-b", **model},
            "j2": {"path": "tiny:llama-c", **model},
            "rm": {"path": "tiny:reward-e", **model, "engine": "hf_reward"},
            "ranker": {"path": "tiny:pairrm-f", **model, "engine": "pairrm"},
            "gpm": {"path": "tiny:gpm", **model, "engine": "gpm"},
        },
        "preferences": {
            "inputs": [{"path": str(prompts)}],
            "policy": "policy",
            "num_samples": 3,
            "sampling": {"temperature": 1.0, "max_new_tokens": 8},
            "truncated_samples": "keep",  # random tiny models never end an answer
            "judging": {
                "judges": ["j1", "j2"],
                "aggregator_judge": "j1",  # j1 is judge and aggregator: one pool
                "criteria_selector": "j2",
                "sampling": {"temperature": 0.0, "max_new_tokens": 8},
                **judging,
            },
            **preferences,
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_logprob_verdicts_rank_samples_into_trl_pairs(ray_cluster, tmp_path):
    config = make_config(tmp_path, judging={"verdict_mode": "logprob"})
    stats = build_preferences(config, config.run_dir)
    assert stats["pairs_kept"] == 4 and stats["rows_rejected"] == 1
    assert stats["abstain_rate"] == 0.0 and stats["criteria_fallbacks"] == 4  # tiny models babble
    assert stats["judge_calls_per_prompt"] == 3 * 2 * 3 + 1
    stage = tmp_path / "run" / "preferences"
    rows = pq.read_table(sorted(stage.glob("part-*.parquet"))[0]).to_pylist()
    row = rows[0]
    assert row["prompt"][-1]["role"] == "user"
    assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    assert row["score_chosen"] > row["score_rejected"]
    audit = pq.read_table(stage / "judgments").to_pylist()
    assert len(audit) == 4 * 3 * 2 * 3  # prompts x pairs x orders x (2 judges + aggregator)
    assert {a["judge"] for a in audit} == {"j1", "j2", "aggregator"}
    assert all(0.0 <= a["p_a"] <= 1.0 for a in audit)

    # TRL's DPO data path reads the pairs as conversational preference data.
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    from moaa_ray.tiny_models import resolve_model_path

    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    assert is_conversational(dataset[0])
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("tiny:llama-a"))
    example = apply_chat_template(dataset[0], tokenizer)
    assert example["prompt"].endswith("<|im_start|>assistant\n")
    assert example["chosen"].startswith(row["chosen"][0]["content"])

    again = build_preferences(config, config.run_dir)
    assert again["pairs_kept"] == 4  # resumed: nothing re-judged or duplicated
    assert len(pq.read_table(stage / "judgments").to_pylist()) == len(audit)


def test_unparseable_text_verdicts_abstain_and_the_stage_says_it_kept_nothing(
    ray_cluster, tmp_path, caplog
):
    config = make_config(tmp_path, judging={"verdict_mode": "text", "aggregator_judge": None})
    stats = build_preferences(config, config.run_dir)
    assert stats["pairs_kept"] == 0
    assert stats["abstain_rate"] == 1.0
    assert stats["prompts_dropped"] == {"no valid judgments": 4}
    # No pair to train on: exit 4 with the reasons, not "done".
    assert (stats["status"], EXIT_CODES[stats["status"]]) == ("empty", 4)
    why = "kept nothing of 5 input rows (no valid judgments: 4, input rows rejected: 1)"
    assert f"stage preferences: {why}" in caplog.text
    assert RunDir(config.run_dir).stage_status("preferences")["status"] == "empty"
    again = build_preferences(config, config.run_dir)  # nothing left to judge: still empty
    assert again["skipped"] and again["status"] == "empty" and again["warning"] == why


@pytest.mark.parametrize(
    ("reward", "model"),
    [("scalar_rm", "rm"), ("pairwise_ranker", "ranker"), ("pairwise_ranker", "gpm")],
)
def test_reward_model_sources(ray_cluster, tmp_path, reward, model):
    config = make_config(tmp_path, reward=reward, reward_model=model)
    stats = build_preferences(config, config.run_dir)
    assert stats["pairs_kept"] == 4
    columns = ["scores", "chosen_index", "rejected_index", "win_probabilities", "preference_table"]
    rows = RunDir(config.run_dir).stage("preferences").read().select(columns).to_pylist()
    assert all(len(set(r["scores"])) == 3 for r in rows)  # every sample scored distinctly
    for row in rows:
        best, worst = row["chosen_index"], row["rejected_index"]
        assert row["scores"][best] == max(row["scores"]) and row["scores"][worst] == min(
            row["scores"]
        )
        probabilities = row["win_probabilities"]
        assert all(probabilities[i][i] == 0.5 for i in range(3))
        assert all(abs(probabilities[i][j] + probabilities[j][i] - 1) < 1e-9
                   for i in range(3) for j in range(3))  # fmt: skip
        table = row["preference_table"]
        assert (table is None) == (reward == "scalar_rm")  # a pairwise ranker's K x K table


@pytest.mark.slow
def test_a_gpm_ranked_round_trains_gpo_on_its_tables(ray_cluster, tmp_path):
    """The GPO-GPM recipe's path at tiny scale: tiny:gpm ranks the policy's samples into tables,
    and DPO with loss_type gpo trains on the pairs' mean score differences."""
    import math

    from moaa_ray.config import DPOConfig
    from moaa_ray.train.dpo import train_dpo

    config = make_config(tmp_path, reward="pairwise_ranker", reward_model="gpm")
    assert build_preferences(config, config.run_dir)["pairs_kept"] == 4
    dpo = DPOConfig(
        model="policy",
        loss_type="gpo",
        beta=0.5,
        global_batch_size=4,
        num_epochs=1,
        max_seq_len=128,
        num_workers=[1, 1],
        zero_stage=0,
        max_failures=0,
    )
    summary = train_dpo(config.model_copy(update={"dpo": dpo}), config.run_dir)
    assert summary["steps"] == 1 and summary["rows_dropped"] == 0
    assert math.isfinite(summary["final_loss"]) and summary["final_loss"] > 0
