"""The MoA SFT-data stage end to end on a local Ray cluster with the real hf engine on tiny models."""

import json

import pyarrow.parquet as pq
import pytest
import yaml

from moaa_ray.config import load_config
from moaa_ray.pipeline import generate
from moaa_ray.pools.dispatch import EngineFailure
from moaa_ray.pools.pool_set import start_pool
from moaa_ray.stages.rundir import RunDir

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

PROMPTS = [{"prompt": f"Question number {i}: why?"} for i in range(6)] + [
    {"prompt": ""},  # bad row: empty
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "old answer"},
            {"role": "user", "content": "More?"},
            {"role": "assistant", "content": "old again"},
        ]
    },
]


def make_config(tmp_path, **generate):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS[:-1]))
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps(PROMPTS[-1]) + "\n")
    model = {"engine": "hf", "num_cpus": 0.25, "max_batch_size": 4}
    raw = {
        "run_dir": str(tmp_path / "run"),
        "models": {
            "a": {"path": "tiny:llama-a", **model},
            "b": {"path": "tiny:qwen2-b", **model},
            "d": {"path": "tiny:qwen2-d", **model},
            "rm": {"path": "tiny:reward-e", **model, "engine": "hf_reward"},
        },
        "generate": {
            "inputs": [{"path": str(prompts)}, {"path": str(chats), "messages_column": "messages"}],
            "proposers": ["a", "b", "a"],
            "aggregator": "d",
            "sampling": {"max_new_tokens": 8, "temperature": 0.8},
            "truncated_answers": "keep",  # random tiny models never end an answer
            "batch_size": 2,
            **generate,
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def read_generated(run_dir):
    table = RunDir(run_dir).stage("generate").read()
    return table.to_pylist() if table is not None else []


def test_streaming_stage_writes_trl_conversations_with_provenance(ray_cluster, tmp_path):
    config = make_config(tmp_path)
    summary = generate.generate_sft(config, config.run_dir)
    rows = read_generated(config.run_dir)
    assert summary["rows_written"] == len(rows) == 7 and summary["rows_rejected"] == 1
    assert len({r["row_id"] for r in rows}) == 7
    chat = next(r for r in rows if r["messages"][0]["role"] == "system")
    assert [m["role"] for m in chat["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert chat["messages"][2]["content"] != "old answer"
    # 2 turns x (3 proposers + 1 aggregator), each tagged with its model
    assert len(chat["proposals"]) == 8
    assert [p["model"] for p in chat["proposals"] if p["turn"] == 0] == ["a", "b", "a", "d"]
    slots = [p["content"] for p in chat["proposals"] if p["turn"] == 0 and p["model"] == "a"]
    assert slots[0] != slots[1]  # one model in two slots samples twice with different seeds
    rejects = (tmp_path / "run" / "generate" / "rejects.jsonl").read_text().splitlines()
    assert "empty text" in json.loads(rejects[0])["reason"]
    manifest = RunDir(config.run_dir).manifest()
    assert manifest["stages"]["generate"]["status"] == "done"
    assert manifest["config"]["generate"]["aggregator"] == "d"
    assert manifest["versions"]["ray"] and manifest["stages"]["generate"]["fingerprint"]["inputs.0"]


def test_interrupted_run_resumes_without_losing_or_duplicating_rows(
    ray_cluster, tmp_path, monkeypatch
):
    config = make_config(tmp_path)
    real_write = generate.GenerateStage.write
    calls = []

    def crash_after_first_shard(self, batch):
        if calls:
            raise KeyboardInterrupt("simulated crash")
        calls.append(1)
        return real_write(self, batch)

    monkeypatch.setattr(generate.GenerateStage, "write", crash_after_first_shard)
    with pytest.raises(KeyboardInterrupt):
        generate.generate_sft(config, config.run_dir)
    first = read_generated(config.run_dir)
    assert 0 < len(first) < 7
    assert RunDir(config.run_dir).stage_status("generate")["status"] == "failed"

    monkeypatch.setattr(generate.GenerateStage, "write", real_write)
    summary = generate.generate_sft(config, config.run_dir)
    rows = read_generated(config.run_dir)
    assert summary["rows_written"] == 7 - len(first)
    assert sorted(r["row_id"] for r in rows) == sorted(set(r["row_id"] for r in rows))
    assert len(rows) == 7

    again = generate.generate_sft(config, config.run_dir)
    assert again["rows_written"] == 0 and len(read_generated(config.run_dir)) == 7


def test_staged_mode_gives_the_same_rows_one_model_at_a_time(ray_cluster, tmp_path):
    config = make_config(tmp_path, mode="staged")
    summary = generate.generate_sft(config, config.run_dir)
    rows = read_generated(config.run_dir)
    assert summary["rows_written"] == 7 and len(rows) == 7
    steps = sorted((tmp_path / "run" / "generate" / "_staged").iterdir())
    # per turn: layer 1 has models a and b (a appears twice: one step), layer 2 has d; 2 turns
    assert len(steps) == 6
    first_step = pq.read_table(next(steps[0].glob("part-*.parquet"))).to_pylist()
    state = json.loads(first_step[0]["state"])
    assert {o["model"] for o in state["outputs"]} == {"a"}
    chat = next(r for r in rows if r["messages"][0]["role"] == "system")
    assert [p["model"] for p in chat["proposals"] if p["turn"] == 1] == ["a", "a", "b", "d"]


@pytest.mark.parametrize("target", ["random_proposer", "all_proposers", "best_of_n"])
def test_proposer_targets_write_the_proposers_answers_without_an_aggregator(
    ray_cluster, tmp_path, target
):
    scored = {"reward_model": "rm"} if target == "best_of_n" else {}
    config = make_config(tmp_path, sft_target=target, **scored)
    summary = generate.generate_sft(config, config.run_dir)
    rows = read_generated(config.run_dir)
    per_prompt = 3 if target == "all_proposers" else 1
    # 6 single-turn prompts; the empty one and the two-turn chat are rejected
    assert summary["rows_written"] == 6 and summary["rows_rejected"] == 2
    assert len(rows) == len({r["row_id"] for r in rows}) == 6 * per_prompt
    assert sum(summary["rows_by_teacher"].values()) == len(rows)
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert {p["layer"] for p in row["proposals"]} == {0}  # the aggregator never ran
        answers = [p["content"] for p in row["proposals"]]
        assert row["messages"][-1]["content"] in answers
        assert row["teacher"] in {"a", "b"}
    if target == "all_proposers":
        assert summary["rows_by_teacher"] == {"a": 12, "b": 6}
    if target == "best_of_n":
        for row in rows:
            scores = row["teacher_scores"]
            best = max(range(3), key=lambda slot: scores[slot])
            assert row["messages"][-1]["content"] == row["proposals"][best]["content"]
    again = generate.generate_sft(config, config.run_dir)  # a rerun adds nothing
    assert again["rows_written"] == 0 and len(read_generated(config.run_dir)) == len(rows)


def test_a_model_that_cannot_load_fails_fast_with_its_name(ray_cluster, tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    config = make_config(tmp_path).models["a"].model_copy(update={"path": str(empty)})
    with pytest.raises(EngineFailure, match="model 'broken' .* failed to load"):
        start_pool("broken", config)


def test_a_pool_that_cannot_be_placed_fails_with_the_resources_it_needs(ray_cluster, tmp_path):
    config = (
        make_config(tmp_path).models["a"].model_copy(update={"num_gpus": 1, "startup_timeout_s": 2})
    )
    with pytest.raises(EngineFailure, match="0/1 actors started .* num_gpus=1"):
        start_pool("gpu-model", config)
