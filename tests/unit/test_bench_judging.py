"""The judging benchmark's toy-task figures: pair accuracy and anchor against round robin."""

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
bench = importlib.import_module("benchmarks.bench_judging")


def row(row_id, question, samples, chosen, rejected, scores=None):
    """A kept row as the preference stage writes it (only the fields the figures read)."""
    return {
        "row_id": row_id,
        "prompt": [{"role": "user", "content": question}],
        "samples": samples,
        "scores": scores,
        "chosen": [{"role": "assistant", "content": samples[chosen]}],
        "rejected": [{"role": "assistant", "content": samples[rejected]}],
    }


def test_chosen_correct_counts_only_pairs_the_verifier_splits():
    kept = [
        row("right", "What is 1 + 2?", ["3", "4"], 0, 1),
        row("wrong", "What is 1 + 2?", ["3", "4"], 1, 0),
        row("both_correct", "What is 1 + 2?", ["3", "3."], 0, 1),
        row("both_wrong", "What is 1 + 2?", ["5", "4"], 0, 1),
        row("unverifiable", "Hello?", ["3", "4"], 0, 1),
    ]
    assert bench.chosen_correct(kept) == [True, False]


def test_anchor_agreement_compares_same_samples_and_a_tie_disagrees():
    samples = ["a", "b", "c", "d"]
    anchor = [
        row("agrees", "q", samples, 2, 0),
        row("reversed", "q", samples, 2, 0),
        row("tied", "q", samples, 2, 0),
        row("other_samples", "q", samples, 2, 0),
        row("anchor_only", "q", samples, 2, 0),
    ]
    round_robin = [
        row("agrees", "q", samples, 2, 3, scores=[0.1, 0.5, 0.9, 0.0]),
        row("reversed", "q", samples, 0, 2, scores=[0.9, 0.5, 0.1, 0.3]),
        row("tied", "q", samples, 1, 3, scores=[0.5, 0.9, 0.5, 0.0]),
        row("other_samples", "q", ["a", "b", "c", "e"], 2, 0, scores=[0.0, 0.1, 0.9, 0.2]),
    ]
    assert bench.anchor_agreement(anchor, round_robin) == (3, 1)
