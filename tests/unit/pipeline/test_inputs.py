import json

import pyarrow as pa
import pyarrow.parquet as pq

from moaa_ray.config import InputConfig
from moaa_ray.pipeline.inputs import detect_format, load_states


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_bad_rows_go_to_rejects_and_good_rows_continue(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "ok 1"}, {"text": "no prompt"}, "{not json", {"prompt": 3}, {"prompt": "ok 1"}],
    )
    states, rejects = load_states([InputConfig(path=str(path))])
    assert [s["messages"][0]["content"] for s in states] == ["ok 1"]
    reasons = [r.reason for r in rejects]
    assert [r.index for r in rejects] == [1, 2, 3, 4]
    assert "missing column 'prompt'" in reasons[0]
    assert "not JSON" in reasons[1]
    assert "expected text" in reasons[2]
    assert "duplicate" in reasons[3]


def test_parquet_with_ultrachat_messages_and_limit(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(5)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    config = InputConfig(path=str(tmp_path / "c.parquet"), messages_column="messages", limit=3)
    assert detect_format(config) == "parquet"
    states, rejects = load_states([config])
    assert len(states) == 3 and not rejects
    assert states[0]["targets"] == [1]


def test_sources_are_concatenated(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "x"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"q": "y"}])
    states, _ = load_states([InputConfig(path=str(a)), InputConfig(path=str(b), prompt_column="q")])
    assert [s["messages"][0]["content"] for s in states] == ["x", "y"]
    assert states[1]["source"].endswith("b.jsonl#0")


def test_unreadable_lines_are_rejected_with_file_and_line_and_the_rest_go_on(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [
        b'{"prompt": "ok 1"}',
        b'{"prompt": "caf\xe9"}',  # latin-1, not UTF-8
        b'{"prompt": "smile \\ud83d"}',  # a lone surrogate, valid JSON
        b"",
        b'{"prompt": null}',
        b'{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}]}',
        b'{"prompt": "ok 2"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    states, rejects = load_states([InputConfig(path=str(path))])
    assert [s["messages"][0]["content"] for s in states] == ["ok 1", "ok 2"]
    assert [r.reason for r in rejects] == [
        f"{path}:2: not UTF-8 (byte 0xe9 at byte 16)",
        f"{path}:3: prompt: lone surrogate \\ud83d at character 6: not valid Unicode",
        f"{path}:5: prompt is null",
        f"{path}:6: missing column 'prompt'",
    ]
    config = InputConfig(path=str(path), messages_column="messages")
    _, rejects = load_states([config])
    assert f"{path}:6: messages[1]: a system turn may only come first" in [
        r.reason for r in rejects
    ]


def prompts(states):
    return [s["messages"][0]["content"] for s in states]


def test_a_sample_is_seeded_and_the_same_whatever_the_files(tmp_path):
    rows = [{"prompt": f"q{i}"} for i in range(40)]
    write_jsonl(tmp_path / "one.jsonl", rows)
    (tmp_path / "split").mkdir()
    write_jsonl(tmp_path / "split" / "a.jsonl", rows[:13])
    write_jsonl(tmp_path / "split" / "b.jsonl", rows[13:])
    one, _ = load_states([InputConfig(path=str(tmp_path / "one.jsonl"), sample=10, seed=7)])
    split, _ = load_states([InputConfig(path=str(tmp_path / "split"), sample=10, seed=7)])
    other, _ = load_states([InputConfig(path=str(tmp_path / "one.jsonl"), sample=10, seed=8)])
    assert prompts(one) == prompts(split)
    assert len(one) == 10 and prompts(one) != prompts(other)
    assert prompts(one) != [f"q{i}" for i in range(10)]  # not the first rows
    assert prompts(one) == sorted(prompts(one), key=lambda p: int(p[1:]))  # in source order


def test_a_sample_is_drawn_from_the_first_limit_rows(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(40)])
    states, _ = load_states([InputConfig(path=str(path), limit=20, sample=5)])
    assert len(states) == 5 and all(int(p[1:]) < 20 for p in prompts(states))
    everything, _ = load_states([InputConfig(path=str(path), limit=20, sample=100)])
    assert prompts(everything) == [f"q{i}" for i in range(20)]
    assert all(
        s["source"] == f"{path}#{int(p[1:])}" for s, p in zip(states, prompts(states), strict=True)
    )
