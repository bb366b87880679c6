"""Tests for moaa_ray.train.dpo's objective: every reference mode scores the starting weights."""

from __future__ import annotations

import math

import pytest
import torch

from moaa_ray.config import DPOConfig, LoraConfig
from moaa_ray.stages.fingerprint import config_identity
from moaa_ray.tiny_models import resolve_model_path
from moaa_ray.train.dpo import REFERENCE_FILE, DPOObjective
from moaa_ray.train.losses import IGNORE_INDEX, sequence_logprobs, token_logprobs
from moaa_ray.train.worker import WorkerSpec, load_causal_lm, load_tokenizer
from tests.support.fakes import FakeEngine

BETA = 0.5


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = tmp_path_factory.mktemp("preferences")
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Name color {i}."}],
            "chosen": [{"role": "assistant", "content": f"Blue number {i}."}],
            "rejected": [{"role": "assistant", "content": "I do not know."}],
        }
        for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(rows), directory / "part-0.parquet")
    return directory


def _spec(pairs_dir, **train) -> WorkerSpec:
    return WorkerSpec(
        stage="dpo",
        train=DPOConfig(beta=BETA, micro_batch_size=2, **train),
        model_path=resolve_model_path("tiny:llama-a"),
        trust_remote_code=False,
        data_path=str(pairs_dir),
        output_dir="unused",
        log_dir="unused",
        progress_file="unused",
    )


def _policy(spec: WorkerSpec):
    model = load_causal_lm(spec, gpu=False)
    if spec.train.lora is not None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        lora = spec.train.lora
        model = get_peft_model(
            model, PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=["q_proj"])
        )
    return model


def _mean_chosen_logps(model, item) -> float:
    rows, batch = item
    with torch.no_grad():
        logps = token_logprobs(model(**batch.inputs).logits, batch.targets)
    return (
        sequence_logprobs(logps, batch.targets, batch.segment_ids, 2 * len(rows))[: len(rows)]
        .mean()
        .item()
    )


@pytest.mark.parametrize(
    "train",
    [
        {"precompute_ref_logprobs": True},
        {"precompute_ref_logprobs": False},
        {"precompute_ref_logprobs": False, "lora": LoraConfig(r=4, alpha=8, dropout=0.0)},
    ],
    ids=["precomputed", "frozen-copy", "lora-disabled"],
)
def test_reference_stays_the_starting_model_while_the_policy_moves(pairs_dir, train, process_group):
    spec = _spec(pairs_dir, **train)
    objective = DPOObjective(spec, load_tokenizer(spec))
    engine = FakeEngine(_policy(spec))
    item = objective.make_batch([0, 1, 2])
    start = _mean_chosen_logps(load_causal_lm(spec, gpu=False), item)
    objective.prepare(engine, None)
    # At the start the policy is its own reference: zero margin, loss log 2.
    loss, metrics = objective.loss(engine, item, objective.counts(item))
    assert metrics["reward_margin"].item() == pytest.approx(0.0, abs=1e-5)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    with torch.no_grad():  # one "training step" moves the policy
        for param in engine.module.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    loss, metrics = objective.loss(engine, item, objective.counts(item))
    reference = (metrics["chosen_logps"] - metrics["chosen_rewards"] / BETA).item()
    assert reference == pytest.approx(start, abs=1e-3)
    assert metrics["chosen_logps"].item() != pytest.approx(start, abs=1e-3)
    loss.backward()
    assert any(p.grad is not None for p in engine.module.parameters() if p.requires_grad)


def test_precomputed_reference_is_saved_and_reloaded_not_recomputed(
    pairs_dir, process_group, tmp_path
):
    spec = _spec(pairs_dir)
    objective = DPOObjective(spec, load_tokenizer(spec))
    objective.prepare(FakeEngine(_policy(spec)), None)
    objective.save(str(tmp_path))
    assert (tmp_path / REFERENCE_FILE).exists()
    resumed = DPOObjective(spec, load_tokenizer(spec))
    moved = _policy(spec)
    with torch.no_grad():
        for param in moved.parameters():
            param.add_(0.1)
    resumed.prepare(FakeEngine(moved), str(tmp_path))  # weights moved: recomputing would differ
    assert torch.equal(resumed.reference, objective.reference)
    assert objective.reference.shape == (3, 2) and (objective.reference < 0).all()


def test_sft_loss_weight_adds_the_chosen_answers_nll(pairs_dir, process_group):
    spec = _spec(pairs_dir, sft_loss_weight=2.0)
    objective = DPOObjective(spec, load_tokenizer(spec))
    engine = FakeEngine(_policy(spec))
    objective.prepare(engine, None)
    item = objective.make_batch([0, 1])
    loss, metrics = objective.loss(engine, item, objective.counts(item))
    assert metrics["sft_loss"].item() > 0
    expected = metrics["dpo_loss"] + 2.0 * metrics["sft_loss"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_swap_pairs_feeds_the_trainer_each_rejected_answer_as_chosen(pairs_dir):
    plain_spec, swapped_spec = _spec(pairs_dir), _spec(pairs_dir, swap_pairs=True)
    plain = DPOObjective(plain_spec, load_tokenizer(plain_spec))
    swapped = DPOObjective(swapped_spec, load_tokenizer(swapped_spec))
    assert swapped.rows[0]["chosen"][0]["content"] == "I do not know."
    assert swapped.rows[0]["rejected"] == plain.rows[0]["chosen"]
    # A batch holds the chosen answers first: the swapped run's are the plain run's rejected ones.
    _, plain_batch = plain.make_batch([0, 1])
    _, swapped_batch = swapped.make_batch([0, 1])
    ids, swapped_ids = plain_batch.inputs["input_ids"], swapped_batch.inputs["input_ids"]
    assert torch.equal(swapped_ids[:2], ids[2:]) and torch.equal(swapped_ids[2:], ids[:2])
    assert torch.equal(swapped_batch.targets[:2], plain_batch.targets[2:])


def test_pairs_whose_prompt_fills_the_window_are_dropped_unless_the_prompt_is_cut(pairs_dir):
    # Every prompt here renders to more than 8 tokens: cut only at the end, no answer token is left.
    uncut_spec = _spec(pairs_dir, max_seq_len=8)
    uncut = DPOObjective(uncut_spec, load_tokenizer(uncut_spec))
    assert (uncut.rows, uncut.rows_dropped, uncut.lengths) == ([], 3, [])
    cut_spec = _spec(pairs_dir, max_seq_len=8, max_prompt_length=4)
    cut = DPOObjective(cut_spec, load_tokenizer(cut_spec))
    assert (len(cut.rows), cut.rows_dropped) == (3, 0)
    _, batch = cut.make_batch([0, 1, 2])
    assert batch.targets.shape[1] == 8
    assert bool(((batch.targets != IGNORE_INDEX).sum(dim=1) > 0).all())


def test_a_swapped_run_has_another_fingerprint():
    plain, swapped = DPOConfig(), DPOConfig(swap_pairs=True)
    assert config_identity(swapped, "dpo")["dpo.swap_pairs"] is True
    assert config_identity(plain, "dpo") != config_identity(swapped, "dpo")


# A non-transitive preference over three samples: 0 beats 1, 1 beats 2, 2 beats 0.
CYCLE = [[0.5, 0.8, 0.1], [0.2, 0.5, 0.7], [0.9, 0.3, 0.5]]
TABLE = [[0.0, 1.5, -2.0], [-1.0, 0.0, 0.5], [2.5, -0.5, 0.0]]  # a GPM-like raw table


def _write_pairs(directory, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), directory / "part-0.parquet")
    return directory


@pytest.fixture(scope="module")
def scored_pairs_dir(tmp_path_factory):
    """Pairs as the preference stage writes them: sample 2 chosen over sample 1, with the prompt's
    win probabilities (a cycle) and a pairwise table."""
    rows = [
        {
            "row_id": f"r{i}",
            "prompt": [{"role": "user", "content": f"Name color {i}."}],
            "chosen": [{"role": "assistant", "content": f"Blue number {i}."}],
            "rejected": [{"role": "assistant", "content": "I do not know."}],
            "score_chosen": 1.0 + i,
            "score_rejected": -1.0,
            "scores": [0.0, -1.0, 1.0 + i],
            "chosen_index": 2,
            "rejected_index": 1,
            "win_probabilities": CYCLE,
            "preference_table": TABLE,
        }
        for i in range(3)
    ]
    return _write_pairs(tmp_path_factory.mktemp("scored-preferences"), rows)


def test_a_non_transitive_preference_reaches_the_sppo_loss_intact(scored_pairs_dir, process_group):
    spec = _spec(scored_pairs_dir, loss_type="sppo")
    objective = DPOObjective(spec, load_tokenizer(spec))
    # Row means of the cycle, read by hand: sample 2 wins 1.7 of 3, sample 1 wins 1.4 of 3. Read as
    # Bradley-Terry strengths from the scores instead, sample 1 would be the worst of the three.
    expected = [1.7 / 3 - 0.5, 1.4 / 3 - 0.5]
    assert torch.allclose(objective.targets, torch.tensor([expected] * 3, dtype=torch.float64))
    engine = FakeEngine(_policy(spec))
    objective.prepare(engine, None)
    item = objective.make_batch([0, 2])
    # The policy starts as its own reference: every log-ratio is 0, each target (p - 1/2) / beta.
    loss, metrics = objective.loss(engine, item, objective.counts(item))
    at_start = (expected[0] ** 2 + expected[1] ** 2) / (2 * BETA**2)
    assert loss.item() == pytest.approx(at_start, rel=1e-4)
    assert metrics["reward_margin"].item() == pytest.approx(0.0, abs=1e-5)
    loss.backward()
    assert any(p.grad is not None for p in engine.module.parameters())


def test_gpo_targets_are_mean_score_differences_of_the_table(scored_pairs_dir, tmp_path):
    spec = _spec(scored_pairs_dir, loss_type="gpo")
    objective = DPOObjective(spec, load_tokenizer(spec))
    # T[i][j] - T[j][i], row means: sample 2 (4.5 - 1.0 + 0) / 3, sample 1 (-2.5 + 0 + 1.0) / 3.
    expected = [3.5 / 3, -1.5 / 3]
    assert torch.allclose(objective.targets, torch.tensor([expected] * 3, dtype=torch.float64))
    # A scalar reward has no table: its score differences s_i - s_j stand in.
    scalar = _write_pairs(tmp_path, [{**objective.rows[0], "preference_table": None}])
    scalar_spec = _spec(scalar, loss_type="gpo")
    targets = DPOObjective(scalar_spec, load_tokenizer(scalar_spec)).targets
    scores = objective.rows[0]["scores"]
    assert targets.tolist() == [[s - sum(scores) / 3 for s in (scores[2], scores[1])]]


def test_pairs_written_before_the_win_probabilities_get_a_clear_error(tmp_path):
    row = {
        "row_id": "old",
        "prompt": [{"role": "user", "content": "Hi."}],
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "No."}],
        "scores": [1.0, 0.0],
    }
    spec = _spec(_write_pairs(tmp_path, [row]), loss_type="sppo")
    match = "reads chosen_index, rejected_index, win_probabilities, which pair 'old' lacks"
    with pytest.raises(ValueError, match=match):
        DPOObjective(spec, load_tokenizer(spec))


def test_swapped_sppo_pairs_keep_their_targets_on_the_swapped_answers(scored_pairs_dir):
    plain_spec = _spec(scored_pairs_dir, loss_type="sppo")
    swapped_spec = _spec(scored_pairs_dir, loss_type="sppo", swap_pairs=True)
    plain = DPOObjective(plain_spec, load_tokenizer(plain_spec))
    swapped = DPOObjective(swapped_spec, load_tokenizer(swapped_spec))
    assert swapped.rows[0]["chosen"] == plain.rows[0]["rejected"]
    # The winner's target now asks for the loser's answer: the control must make the model worse.
    assert torch.equal(swapped.targets, plain.targets)
