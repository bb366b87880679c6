"""Tests for moaa_ray.train.losses: token and sequence log-probs, DPO / cDPO / robust / IPO / SPPO."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from moaa_ray.train.losses import (
    IGNORE_INDEX,
    dpo_loss,
    sequence_logprobs,
    sppo_loss,
    token_logprobs,
)


def test_token_logprobs_match_cross_entropy_and_zero_ignored_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    targets = torch.tensor([[3, 1, IGNORE_INDEX, 7, 0], [IGNORE_INDEX] * 4 + [10]])
    logps = token_logprobs(logits, targets)
    expected = -F.cross_entropy(
        logits.view(-1, 11), targets.view(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(2, 5)
    assert torch.allclose(logps, expected, atol=1e-6)
    assert (logps[targets == IGNORE_INDEX] == 0).all()


def test_sequence_logprobs_are_the_same_padded_or_packed():
    token_logps = torch.tensor([[-1.0, -2.0, -3.0, 0.0], [-4.0, -5.0, 0.0, 0.0]])
    targets = torch.tensor([[1, 1, 1, IGNORE_INDEX], [1, 1, IGNORE_INDEX, IGNORE_INDEX]])
    segments = torch.tensor([[0, 0, 0, 0], [1, 1, 1, -1]])
    padded = sequence_logprobs(token_logps, targets, segments, 2)
    packed = sequence_logprobs(
        torch.tensor([[-1.0, -2.0, -3.0, 0.0, -4.0, -5.0, 0.0]]),
        torch.tensor([[1, 1, 1, IGNORE_INDEX, 1, 1, IGNORE_INDEX]]),
        torch.tensor([[0, 0, 0, 0, 1, 1, 1]]),
        2,
    )
    assert padded.tolist() == packed.tolist() == [-6.0, -9.0]
    means = sequence_logprobs(token_logps, targets, segments, 2, average=True)
    assert means.tolist() == [-2.0, -4.5]


def test_sequence_without_trained_tokens_scores_zero_even_averaged():
    token_logps = torch.zeros(1, 3)
    targets = torch.full((1, 3), IGNORE_INDEX)
    out = sequence_logprobs(token_logps, targets, torch.zeros(1, 3, dtype=torch.long), 1, True)
    assert out.tolist() == [0.0]


def _pair(margin: float):
    # Policy log-ratio margin `margin` against a reference of zeros.
    return torch.tensor([margin]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0])


def test_dpo_sigmoid_loss_and_rewards():
    losses, chosen, rejected = dpo_loss(
        torch.tensor([-10.0, -12.0]),
        torch.tensor([-14.0, -11.0]),
        torch.tensor([-11.0, -11.0]),
        torch.tensor([-13.0, -11.0]),
        beta=0.1,
    )
    # margins: (1 - (-1)) = 2 and (-1 - 0) = -1
    expected = [-math.log(1 / (1 + math.exp(-0.2))), -math.log(1 / (1 + math.exp(0.1)))]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert chosen.tolist() == pytest.approx([0.1, -0.1])
    assert rejected.tolist() == pytest.approx([-0.1, 0.0])


def test_dpo_loss_is_log2_at_the_reference_and_falls_as_the_margin_grows():
    at_reference = dpo_loss(*_pair(0.0), beta=0.1)[0]
    assert at_reference.item() == pytest.approx(math.log(2))
    assert dpo_loss(*_pair(5.0), beta=0.1)[0].item() < at_reference.item()


def test_dpo_gradient_raises_chosen_and_lowers_rejected_logprobs():
    chosen = torch.tensor([-5.0], requires_grad=True)
    rejected = torch.tensor([-5.0], requires_grad=True)
    losses, chosen_reward, _ = dpo_loss(
        chosen, rejected, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.5
    )
    losses.sum().backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()
    assert not chosen_reward.requires_grad


def test_cdpo_label_smoothing_stops_pushing_at_a_finite_margin():
    beta, eps = 0.5, 0.1
    margins = torch.linspace(-20, 40, 6001)
    ones = torch.zeros_like(margins)
    losses = dpo_loss(margins, ones, ones, ones, beta=beta, label_smoothing=eps)[0]
    best = margins[losses.argmin()].item()
    assert best == pytest.approx(math.log((1 - eps) / eps) / beta, abs=0.02)


def test_robust_dpo_is_unbiased_under_label_flips():
    beta, eps = 0.2, 0.3
    for margin in (-3.0, 0.5, 4.0):
        clean = dpo_loss(*_pair(margin), beta=beta)[0]
        kept = dpo_loss(*_pair(margin), beta=beta, loss_type="robust", label_smoothing=eps)[0]
        flipped = dpo_loss(*_pair(-margin), beta=beta, loss_type="robust", label_smoothing=eps)[0]
        assert ((1 - eps) * kept + eps * flipped).item() == pytest.approx(clean.item(), rel=1e-5)
    plain = dpo_loss(*_pair(1.5), beta=beta, loss_type="robust")[0]
    assert plain.item() == pytest.approx(dpo_loss(*_pair(1.5), beta=beta)[0].item())


def test_ipo_pulls_the_margin_to_one_over_two_beta():
    beta = 0.25
    assert dpo_loss(*_pair(2.0), beta=beta, loss_type="ipo")[0].item() == pytest.approx(0.0)
    assert dpo_loss(*_pair(0.0), beta=beta, loss_type="ipo")[0].item() == pytest.approx(4.0)
    assert dpo_loss(*_pair(5.0), beta=beta, loss_type="ipo")[0].item() == pytest.approx(9.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"loss_type": "hinge"}, "loss_type"), ({"label_smoothing": 0.5}, "label_smoothing")],
)
def test_dpo_loss_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dpo_loss(*_pair(1.0), beta=0.1, **kwargs)


def test_sppo_loss_regresses_each_log_ratio_onto_its_centred_win_rate():
    beta = 0.5
    losses, chosen_rewards, rejected_rewards = sppo_loss(
        torch.tensor([-10.0, -3.0]),  # log-ratios 1.0 and 0.0
        torch.tensor([-14.0, -8.0]),  # log-ratios -1.0 and -2.0
        torch.tensor([-11.0, -3.0]),
        torch.tensor([-13.0, -6.0]),
        torch.tensor([0.4, 0.0]),  # win rates 0.9 and 0.5: targets (p - 1/2) / beta, 0.8 and 0.0
        torch.tensor([-0.3, 0.0]),  # win rates 0.2 and 0.5: targets -0.6 and 0.0
        beta=beta,
    )
    expected = [((1.0 - 0.8) ** 2 + (-1.0 + 0.6) ** 2) / 2, (0.0**2 + (-2.0) ** 2) / 2]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert chosen_rewards.tolist() == pytest.approx([0.5, 0.0])
    assert rejected_rewards.tolist() == pytest.approx([-0.5, -1.0])


def test_sppo_moves_log_ratios_to_their_targets_and_no_further():
    beta, win_chosen, win_rejected = 0.1, 0.75, 0.3
    ratios = torch.zeros(2, requires_grad=True)  # policy log-probs over a reference of zeros
    optimizer = torch.optim.SGD([ratios], lr=0.5)
    for _ in range(100):
        optimizer.zero_grad()
        losses = sppo_loss(
            ratios[:1],
            ratios[1:],
            torch.zeros(1),
            torch.zeros(1),
            torch.tensor([win_chosen - 0.5]),
            torch.tensor([win_rejected - 0.5]),
            beta=beta,
        )[0]
        losses.sum().backward()
        optimizer.step()
    targets = [(win_chosen - 0.5) / beta, (win_rejected - 0.5) / beta]
    assert ratios.tolist() == pytest.approx(targets, abs=1e-4)
