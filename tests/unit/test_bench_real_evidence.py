"""The real-weights benchmark's pure parts: its intervals and the config of its judged evaluation."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
bench = importlib.import_module("benchmarks.bench_real_evidence")


def test_interval_is_the_wilson_interval_of_a_percentage_in_percent():
    assert bench.interval(21.0, 300) == [16.8, 26.0]  # 63 of 300
    assert bench.interval(0.0, 10) == [0.0, 27.8]


def test_the_judged_evaluation_pits_the_final_model_against_the_untrained_weights(tmp_path):
    from moaa_ray.config.validation import validate_config

    final = tmp_path / "final-model"
    final.mkdir()
    path = bench.judged_config(str(final), tmp_path)

    report = validate_config(path)
    assert report.problems == []
    config = yaml.safe_load(path.read_text())
    assert config["models"]["smol"]["path"] == str(final)
    assert config["models"]["base"]["path"] == "real:smollm2-135m-instruct"
    assert config["evaluate"]["baseline_model"] == "base"
    assert config["evaluate"]["judging"]["judges"] == ["base"]
    rows = json.loads((tmp_path / "held_out.json").read_text())
    assert len(rows) == bench.JUDGED and rows[0]["instruction"].endswith("?")


def test_paired_outcomes_count_changed_questions_and_match_scipys_exact_mcnemar():
    from scipy.stats import binomtest

    before = {f"q{i}": i < 10 for i in range(40)}  # q0-q9 right
    after = {f"q{i}": 7 <= i < 30 for i in range(40)}  # q0-q6 lost, q10-q29 gained
    paired = bench.paired_outcomes(before, after)
    assert (paired["gained"], paired["lost"]) == (20, 7)
    assert paired["mcnemar_p"] == pytest.approx(binomtest(20, 27).pvalue)
    assert bench.paired_outcomes(before, before)["mcnemar_p"] == 1.0


def test_single_sample_rows_answer_with_the_first_proposers_sample_of_the_last_turn(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def proposal(turn, layer, content):
        return {"turn": turn, "layer": layer, "slot": 0, "model": "m", "content": content}

    ask = {"role": "user", "content": "What is the capital of France?"}
    rows = [
        {
            "messages": [ask, {"role": "assistant", "content": "aggregated"}],
            "proposals": [proposal(0, 0, None), proposal(0, 0, "first"), proposal(0, 1, "agg")],
        },
        {
            "messages": [ask, {"role": "assistant", "content": "x"}],
            "proposals": [proposal(0, 0, "")],
        },
    ]
    generate = tmp_path / "generate"
    generate.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), generate / "part-0.parquet")

    bench.single_sample_rows(generate, tmp_path / "data")
    written = pq.read_table(tmp_path / "data" / "part-00000.parquet").to_pylist()
    assert written == [{"messages": [ask, {"role": "assistant", "content": "first"}]}]
