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


def test_accuracy_reads_an_evaluations_figure_and_interval_in_percent(tmp_path):
    facts = {"accuracy": 0.21, "accuracy_ci": [0.16789, 0.26], "samples_per_question": 3}
    (tmp_path / "results.json").write_text(json.dumps({"benchmarks": {"facts": facts}}))
    assert bench.accuracy(tmp_path) == {"accuracy": 21.0, "accuracy_ci": [16.8, 26.0]}


def test_each_model_of_a_run_is_read_where_moaa_run_evaluated_it(tmp_path):
    assert bench.evaluation_dir(tmp_path, "base", last=False) == tmp_path / "base" / "evaluate"
    assert bench.evaluation_dir(tmp_path, "sft", last=False) == tmp_path / "round-0" / "evaluate"
    middle = bench.evaluation_dir(tmp_path, "round-1/dpo", last=False)
    assert middle == tmp_path / "round-1" / "evaluate"
    assert bench.evaluation_dir(tmp_path, "round-2/dpo", last=True) == tmp_path / "evaluate"


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
    assert config["evaluate"]["num_samples"] == 1  # the run's config samples 3: verified only
    rows = json.loads((tmp_path / "held_out.json").read_text())
    assert len(rows) == bench.JUDGED and rows[0]["instruction"].endswith("?")


def test_paired_outcomes_count_changed_questions_and_match_scipys_exact_mcnemar():
    from scipy.stats import binomtest

    before = {f"q{i}": float(i < 10) for i in range(40)}  # q0-q9 right
    after = {f"q{i}": float(7 <= i < 30) for i in range(40)}  # q0-q6 lost, q10-q29 gained
    paired = bench.paired_outcomes(before, after)
    assert (paired["gained"], paired["lost"]) == (20, 7)
    assert paired["sign_test_p"] == pytest.approx(binomtest(20, 27).pvalue)
    assert paired["mean_gain"] == 32.5  # (20 - 7) / 40
    assert bench.paired_outcomes(before, before)["sign_test_p"] == 1.0


def test_paired_outcomes_of_sample_shares_give_the_mean_gain_and_its_interval():
    from scipy import stats

    before = {"a": 0.0, "b": 1 / 3, "c": 1.0, "d": 2 / 3, "e": 0.0}
    after = {"a": 2 / 3, "b": 1 / 3, "c": 2 / 3, "d": 1.0, "e": 1.0, "unmatched": 1.0}
    paired = bench.paired_outcomes(before, after)
    assert (paired["gained"], paired["lost"]) == (3, 1)
    differences = [after[q] - before[q] for q in before]
    low, high = stats.norm.interval(0.95, loc=sum(differences) / 5, scale=stats.sem(differences))
    assert paired["mean_gain_ci"] == [round(100 * low, 1), round(100 * high, 1)]
    assert paired["sign_test_p"] == pytest.approx(binomtest_p(3, 4))


def binomtest_p(successes, trials):
    from scipy.stats import binomtest

    return binomtest(successes, trials).pvalue


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
