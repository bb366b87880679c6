from pathlib import Path

from moaa_ray.config import load_config
from moaa_ray.orchestrator import TRAINED_POLICY, format_summary, with_trained_policy

REPO = Path(__file__).resolve().parents[2]


def test_each_round_samples_trains_and_is_evaluated_from_the_given_model(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "demo.yaml")
    swapped = with_trained_policy(config, str(tmp_path))
    policy = swapped.models[TRAINED_POLICY]
    assert policy.path == str(tmp_path)
    assert policy.num_cpus == config.models[config.sft.model].num_cpus  # pool settings kept
    assert (
        swapped.preferences.policy == swapped.dpo.model == swapped.evaluate.model == TRAINED_POLICY
    )
    assert swapped.evaluate.baseline_model == config.evaluate.baseline_model
    assert config.preferences.policy == "llama-a"  # the original is untouched


def test_summary_table_lists_stages_figures_and_artifacts():
    summary = {
        "stages": {
            "generate": {"rows_total": 36, "rows_rejected": 1, "seconds": 12.0},
            "evaluate": {
                "seconds": 3.0,
                "benchmarks": {"mt": {"win_rate": 61.5, "lc_win_rate": 58.25, "baseline": "b"}},
            },
        },
        "run_dir": "runs/x",
        "final_model": "runs/x/round-1/dpo/model",
    }
    table = format_summary(summary)
    assert "generate" in table and "rows_total=36" in table and "rows_rejected=1" in table
    assert "win_rate=61.5" in table and "lc_win_rate=58.25" in table and "vs b" in table
    assert table.splitlines()[-1].endswith("runs/x/round-1/dpo/model")


def test_summary_table_says_first_that_a_stage_is_incomplete():
    summary = {
        "stages": {"generate": {"rows_total": 30, "rows_failed": 6, "status": "partial"}},
        "run_dir": "runs/x",
        "final_model": None,
    }
    line = format_summary(summary).splitlines()[2]
    assert "PARTIAL: rows_failed=6, rows_total=30" in line
