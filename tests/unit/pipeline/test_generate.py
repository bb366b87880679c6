"""The generate stage's files without a cluster: the summary reads the verifier's figures back."""

import json

import pytest

from moaa_ray.config import MoaaConfig
from moaa_ray.core.moa import new_state, record_output
from moaa_ray.pipeline import generate
from moaa_ray.stages.rundir import RunDir


def verify(messages, answer):
    """Correct when the answer is "4" to "What is 2 + 2?"; other questions are not checkable."""
    return answer == "4" if messages[-1]["content"] == "What is 2 + 2?" else None


def config(tmp_path, verifier, inputs="unused.jsonl"):
    return MoaaConfig(
        run_dir=str(tmp_path),
        verifier=verifier,
        models={"p": {"path": "tiny:llama-a"}, "q": {"path": "tiny:llama-a"}},
        generate={"inputs": [{"path": inputs}], "proposers": ["p", "q"], "aggregator": "q"},
    )


def answered(row_id, question, proposals, final):
    state = new_state(row_id, [{"role": "user", "content": question}], "src")
    for slot, (model, text) in enumerate(zip(["p", "q"], proposals, strict=True)):
        record_output(state, 0, 0, slot, model, text, None)
    record_output(state, 0, 1, 0, "q", final, None)
    return state


def test_summary_has_verifier_figures_over_every_row_written(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "count_rows", lambda *args, **kwargs: None)
    cfg = config(tmp_path, f"{__name__}:verify")
    first = generate.GenerateStage(cfg, cfg.generate, RunDir(tmp_path))
    first.write([answered("a", "What is 2 + 2?", ["4", "5"], "4")])
    resumed = generate.GenerateStage(cfg, cfg.generate, RunDir(tmp_path))  # a later run
    resumed.write(
        [answered("b", "What is 2 + 2?", ["4", "4"], "3"), answered("c", "Hi", ["x", "y"], "z")]
    )
    assert resumed.summarize()["verifier"] == {
        "accuracy": 0.5,
        "proposer_accuracy": {"p": 1.0, "q": 0.5},
        "verifiable": 2,
    }
    unverified = config(tmp_path, None)
    stage = generate.GenerateStage(unverified, unverified.generate, RunDir(tmp_path))
    assert "verifier" not in stage.summarize()


def test_a_run_whose_every_prompt_is_rejected_keeps_nothing_says_why_and_exits_4(tmp_path, caplog):
    from moaa_ray.stages.runner import EXIT_CODES

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": 7}\n{"question": "no prompt column"}\n')
    cfg = config(tmp_path, None, inputs=str(prompts))
    summary = generate.generate_sft(cfg, tmp_path / "run")  # nothing to do: no cluster starts
    assert (summary["status"], EXIT_CODES[summary["status"]]) == ("empty", 4)
    assert summary["not_kept"] == {"input rows rejected": 2}
    assert "stage generate: kept nothing of 2 input rows (input rows rejected: 2)" in caplog.text
    assert RunDir(tmp_path / "run").stage_status("generate")["status"] == "empty"


def proposers_config(tmp_path, inputs=({"path": "unused.jsonl"},), **generate_keys):
    return MoaaConfig(
        run_dir=str(tmp_path),
        models={"p": {"path": "tiny:llama-a"}, "q": {"path": "tiny:llama-a"}},
        generate={"inputs": list(inputs), "proposers": ["p", "q"], **generate_keys},
    )


def proposals(row_id, question):
    state = new_state(row_id, [{"role": "user", "content": question}], "src")
    for slot, model in enumerate(["p", "q"]):
        record_output(state, 0, 0, slot, model, f"{model} on {question}", None)
    return state


def test_all_proposers_rows_resume_by_prompt_and_are_counted_per_teacher(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "count_rows", lambda *args, **kwargs: None)
    cfg = proposers_config(tmp_path, sft_target="all_proposers")
    stage = generate.GenerateStage(cfg, cfg.generate, RunDir(tmp_path))
    assert stage.plan.layers == (("p", "q"),)  # no aggregator runs
    outcome = stage.write([proposals("a", "Hi"), proposals("b", "Yo")])
    assert outcome.written == 2  # prompts; each gave a row per proposer
    resumed = generate.GenerateStage(cfg, cfg.generate, RunDir(tmp_path))
    assert resumed.done_ids() == {"a", "b"}  # a rerun does these prompts no more
    assert resumed.summarize()["rows_by_teacher"] == {"p": 2, "q": 2}
    rows = RunDir(tmp_path).stage("generate").read().to_pylist()
    assert sorted(r["row_id"] for r in rows) == ["a#0-p", "a#1-q", "b#0-p", "b#1-q"]
    answers = {r["teacher"]: r["messages"][-1]["content"] for r in rows if r["row_id"][0] == "a"}
    assert answers == {"p": "p on Hi", "q": "q on Hi"}


@pytest.mark.parametrize(
    ("keys", "kept"),
    [({"sft_target": "random_proposer"}, 1), ({"sft_target": "aggregator", "aggregator": "q"}, 2)],
)
def test_proposer_targets_reject_conversations_with_several_turns_to_answer(tmp_path, keys, kept):
    prompts, chats = tmp_path / "prompts.jsonl", tmp_path / "chats.jsonl"
    prompts.write_text(json.dumps({"prompt": "one question"}) + "\n")
    turns = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "old"}]
    chats.write_text(json.dumps({"messages": [*turns, {"role": "user", "content": "2"}]}) + "\n")
    inputs = [{"path": str(prompts)}, {"path": str(chats), "messages_column": "messages"}]
    cfg = proposers_config(tmp_path, inputs, **keys)
    states, rejects = generate.GenerateStage(cfg, cfg.generate, RunDir(tmp_path)).load()
    assert len(states) == kept
    assert [r.reason for r in rejects] == [
        "sft_target 'random_proposer' answers single-turn prompts only; this conversation has 2 "
        "assistant turns to generate"
    ][: 2 - kept]
