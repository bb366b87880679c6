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
