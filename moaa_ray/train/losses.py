"""Loss math of SFT, DPO and SPPO as pure functions over tensors (no ray, no models).

Targets are already aligned with the logits: ``targets[..., t]`` is the token that position ``t``
predicts, or :data:`IGNORE_INDEX` where nothing is trained (prompt, padding, sequence ends).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
DPOLossType = Literal["sigmoid", "ipo", "robust"]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability of each target token, 0 where the target is ignored.

    Args:
        logits: ``[batch, time, vocab]``.
        targets: ``[batch, time]`` token ids or :data:`IGNORE_INDEX`.

    Returns:
        ``[batch, time]`` float32 log-probabilities.
    """
    mask = targets != IGNORE_INDEX
    logits = logits.float()
    picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked - torch.logsumexp(logits, dim=-1)) * mask


def sequence_logprobs(
    token_logps: torch.Tensor,
    targets: torch.Tensor,
    segment_ids: torch.Tensor,
    num_sequences: int,
    average: bool = False,
) -> torch.Tensor:
    """Sum (or mean) of the trained tokens' log-probabilities of each sequence.

    Works for padded rows and for packed rows (several sequences in one row) alike.

    Args:
        token_logps: from :func:`token_logprobs`.
        targets: the same targets (their mask decides which tokens count).
        segment_ids: sequence index of every position, -1 on padding.
        num_sequences: number of sequences in the batch.
        average: divide by each sequence's trained-token count (0 tokens give 0).

    Returns:
        ``[num_sequences]``.
    """
    mask = (targets != IGNORE_INDEX).flatten()
    index = segment_ids.clamp(min=0).flatten()
    zeros = token_logps.new_zeros(num_sequences)
    sums = zeros.index_add(0, index, token_logps.flatten() * mask)
    if not average:
        return sums
    counts = zeros.index_add(0, index, mask.to(zeros.dtype))
    return sums / counts.clamp(min=1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair preference losses and implicit rewards ``beta * (log pi - log pi_ref)``.

    * ``sigmoid``: DPO (Rafailov et al., arXiv 2305.18290),
      ``-log sigmoid(beta * margin)``; with ``label_smoothing`` eps > 0 it is conservative DPO (cDPO),
      which treats each label as flipped with probability eps.
    * ``robust``: the unbiased robust-DPO estimator for labels flipped with probability eps
      (Chowdhury et al., arXiv 2403.00409); equals DPO at eps = 0.
    * ``ipo``: IPO (Azar et al., arXiv 2310.12036), ``(margin - 1 / (2 beta))^2``; its paper uses mean
      per-token log-probabilities (``sequence_logprobs(..., average=True)``).

    Here ``margin = (log pi(chosen) - log pi_ref(chosen)) - (log pi(rejected) - log pi_ref(rejected))``.

    Args:
        policy_chosen: ``[pairs]`` sequence log-probs of the chosen answers under the policy.
        policy_rejected: same, rejected answers.
        reference_chosen: chosen answers under the reference model.
        reference_rejected: rejected answers under the reference model.
        beta: strength of the KL regularization to the reference.
        loss_type: ``sigmoid``, ``ipo`` or ``robust``.
        label_smoothing: assumed label-flip probability eps in [0, 0.5) (sigmoid, robust).

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``[pairs]``; rewards carry no gradient.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    margin = chosen_ratio - rejected_ratio
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * margin) * (1 - eps) - F.logsigmoid(-beta * margin) * eps
    elif loss_type == "robust":
        losses = (-F.logsigmoid(beta * margin) * (1 - eps) + F.logsigmoid(-beta * margin) * eps) / (
            1 - 2 * eps
        )
    elif loss_type == "ipo":
        losses = (margin - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def sppo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    chosen_preference: torch.Tensor,
    rejected_preference: torch.Tensor,
    *,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SPPO (Wu et al., Self-Play Preference Optimization, arXiv 2405.00675) and GPO (Zhang et al.,
    arXiv 2410.02197): per-pair losses.

    Each answer's log-ratio ``log pi(y|x) - log pi_ref(y|x)`` is regressed onto its centred
    preference over the policy divided by ``beta``: ``((ratio_w - c_w / beta)^2 + (ratio_l - c_l /
    beta)^2) / 2``, the halved sum of the SPPO repository's trainer. For SPPO, ``c = P(y > pi) -
    1/2``, the win rate centred; for GPO, ``c`` is the mean score difference against the policy's
    samples, already centred on 0 (:mod:`moaa_ray.core.general_preference`). ``beta`` is the
    papers' ``1 / eta``.

    Args:
        policy_chosen: ``[pairs]`` sequence log-probs of the chosen answers under the policy.
        policy_rejected: same, rejected answers.
        reference_chosen: chosen answers under the reference model.
        reference_rejected: rejected answers under the reference model.
        chosen_preference: ``[pairs]`` the chosen answers' centred preference ``c``.
        rejected_preference: same, rejected answers.
        beta: strength of the pull towards the reference; ``c`` asks for the log-ratio ``c / beta``.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``[pairs]``; rewards are
        ``beta * log-ratio``, without gradient.
    """
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    chosen_target = chosen_preference.to(chosen_ratio.dtype) / beta
    rejected_target = rejected_preference.to(rejected_ratio.dtype) / beta
    losses = ((chosen_ratio - chosen_target) ** 2 + (rejected_ratio - rejected_target) ** 2) / 2
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
