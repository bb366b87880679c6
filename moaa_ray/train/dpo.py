"""DPO (or SPPO) from the SFT model on the MoA-judged preference pairs; the SFT model is also the
reference.

The reference log-probs come from one of three places: precomputed once from the starting weights
(``precompute_ref_logprobs``, the default: no second model in memory; saved with every checkpoint so a
resumed run does not recompute them), the policy with its LoRA adapters disabled, or a frozen copy of
the starting weights on each worker. ``swap_pairs`` (a negative control) trains on every pair with
chosen and rejected exchanged; being part of the section, it is part of the stage's fingerprint.

SPPO (``loss_type: sppo``) and GPO (``loss_type: gpo``) regress each answer's log-ratio onto its
preference over the prompt's samples, read from the pair's row (:func:`self_play_targets`): SPPO's
win rate from ``win_probabilities``, GPO's mean score difference from ``preference_table`` (or, for
a scalar reward, ``scores``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from moaa_ray.config import DPOConfig, MoaaConfig
from moaa_ray.core.general_preference import mean_score_differences, win_rates
from moaa_ray.stages.layout import DPO, PREFERENCES, SFT, TRAINED_MODEL
from moaa_ray.train.collate import (
    Batch,
    Example,
    collate,
    encode_preference,
    keep_trainable,
    swap_pair,
)
from moaa_ray.train.launch import run_training
from moaa_ray.train.losses import (
    IGNORE_INDEX,
    dpo_loss,
    sequence_logprobs,
    sppo_loss,
    token_logprobs,
)
from moaa_ray.train.worker import WorkerSpec, load_causal_lm, read_training_rows, train_worker

STAGE = DPO
INPUT_STAGE = PREFERENCES
REFERENCE_FILE = "reference_logprobs.pt"

SELF_PLAY_LOSSES = ("sppo", "gpo")  # regress each answer's log-ratio onto its preference
SELF_PLAY_COLUMNS = [
    "row_id",
    "chosen_index",
    "rejected_index",
    "win_probabilities",
    "preference_table",
]
PairBatch = tuple[list[int], Batch]  # row indices, then chosen answers followed by rejected ones


def _chars(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


class DPOObjective:
    """Preference loss (sigmoid/cDPO, IPO, robust, SPPO, GPO) plus an optional NLL on the chosen answers."""

    def __init__(self, spec: WorkerSpec, tokenizer: Any):
        if not isinstance(spec.train, DPOConfig):
            raise TypeError(f"DPO needs a DPOConfig, got {type(spec.train).__name__}")
        self.spec, self.cfg, self.tokenizer = spec, spec.train, tokenizer
        columns = ["prompt", "chosen", "rejected"]
        self_play = self.cfg.loss_type in SELF_PLAY_LOSSES
        if self_play:
            columns.append("scores")
        rows = read_training_rows(spec.data_path, columns, SELF_PLAY_COLUMNS if self_play else ())
        rows = [swap_pair(r) for r in rows] if self.cfg.swap_pairs else rows
        self.rows, self.rows_dropped = keep_trainable(rows, self._encode)
        # [rows, 2] SPPO/GPO targets (chosen, rejected). swap_pairs moves the answers, not the
        # indices, so the negative control asks the loser for the winner's log-ratio.
        self.targets = (
            torch.tensor(
                [self_play_targets(r, self.cfg.loss_type) for r in self.rows], dtype=torch.float64
            )
            if self_play
            else None
        )
        self.lengths = [
            _chars(r["prompt"]) + _chars(r["chosen"]) + _chars(r["rejected"]) for r in self.rows
        ]
        self.average = self.cfg.loss_type == "ipo"  # IPO scores mean per-token log-probs
        self.reference: torch.Tensor | None = None  # [rows, 2] precomputed (chosen, rejected)
        self.reference_model: torch.nn.Module | None = None

    def make_batch(self, rows: list[int]) -> PairBatch:
        """Tokenize each pair (prompt + chosen, prompt + rejected) and collate all answers."""
        pairs = [self._encode(self.rows[i]) for i in rows]
        examples = [c for c, _ in pairs] + [r for _, r in pairs]
        return rows, collate(examples, self.tokenizer.pad_token_id, self.cfg.packing)

    def _encode(self, row: dict[str, Any]) -> tuple[Example, Example]:
        return encode_preference(
            self.tokenizer,
            row["prompt"],
            row["chosen"],
            row["rejected"],
            self.cfg.max_seq_len,
            self.cfg.max_prompt_length,
        )

    def counts(self, item: PairBatch) -> dict[str, float]:
        """Pairs, trained tokens of the chosen answers, all tokens."""
        rows, batch = item
        chosen = _chosen_mask(batch, len(rows))
        return {"pairs": len(rows), "chosen_targets": int(chosen.sum()), "tokens": batch.num_tokens}

    def loss(
        self, engine: Any, item: PairBatch, totals: dict[str, float]
    ) -> tuple[torch.Tensor, dict]:
        """This batch's share of the step's mean pair loss (+ weighted chosen-answer NLL) and metrics."""
        rows, batch = item
        batch, pairs = batch.to(engine.device), totals["pairs"]
        token_logps, chosen, rejected = self._sequence_logps(engine, batch, len(rows))
        ref_chosen, ref_rejected = self._reference_logps(engine, rows, batch)
        logps = (chosen, rejected, ref_chosen, ref_rejected)
        losses, chosen_rewards, rejected_rewards = self._pair_losses(rows, logps)
        loss = losses.sum() / pairs
        metrics = {"dpo_loss": loss.detach()}
        if self.cfg.sft_loss_weight > 0:
            chosen_tokens = _chosen_mask(batch, len(rows))
            nll = -(token_logps * chosen_tokens).sum() / max(totals["chosen_targets"], 1)
            loss = loss + self.cfg.sft_loss_weight * nll
            metrics["sft_loss"] = nll.detach()
        return loss, {
            **metrics,
            "loss": loss.detach(),
            "reward_accuracy": (chosen_rewards > rejected_rewards).float().sum() / pairs,
            "reward_margin": (chosen_rewards - rejected_rewards).sum() / pairs,
            "chosen_rewards": chosen_rewards.sum() / pairs,
            "rejected_rewards": rejected_rewards.sum() / pairs,
            "chosen_logps": chosen.detach().sum() / pairs,
            "rejected_logps": rejected.detach().sum() / pairs,
        }

    def _pair_losses(
        self, rows: list[int], logps: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pair losses and rewards from (policy chosen, rejected, reference chosen, rejected)."""
        chosen, rejected, ref_chosen, ref_rejected = logps
        loss_type = self.cfg.loss_type
        if loss_type == "sppo" or loss_type == "gpo":
            assert self.targets is not None  # read in __init__ for sppo and gpo
            targets = self.targets[rows].to(chosen.device)
            return sppo_loss(
                chosen,
                rejected,
                ref_chosen,
                ref_rejected,
                targets[:, 0],
                targets[:, 1],
                beta=self.cfg.beta,
            )
        return dpo_loss(
            chosen,
            rejected,
            ref_chosen,
            ref_rejected,
            beta=self.cfg.beta,
            loss_type=loss_type,
            label_smoothing=self.cfg.label_smoothing,
        )

    def prepare(self, engine: Any, checkpoint_dir: str | None) -> None:
        """Set up the reference: load saved log-probs, precompute them, or load a frozen model."""
        if not self.cfg.precompute_ref_logprobs:
            if self.cfg.lora is None:
                model = load_causal_lm(self.spec, engine.device.type == "cuda")
                self.reference_model = model.to(engine.device).eval().requires_grad_(False)
            return
        saved = Path(checkpoint_dir, REFERENCE_FILE) if checkpoint_dir else None
        if saved is not None and saved.exists():
            self.reference = torch.load(saved)
        else:
            self.reference = self._precompute(engine)

    def save(self, checkpoint_dir: str) -> None:
        """Keep the precomputed reference log-probs with the checkpoint."""
        if self.reference is not None:
            torch.save(self.reference, Path(checkpoint_dir, REFERENCE_FILE))

    def _sequence_logps(self, model: Any, batch: Batch, num_pairs: int):
        logits = model(**batch.inputs, use_cache=False).logits
        token_logps = token_logprobs(logits, batch.targets)
        sequences = sequence_logprobs(
            token_logps, batch.targets, batch.segment_ids, batch.num_examples, self.average
        )
        return token_logps, sequences[:num_pairs], sequences[num_pairs:]

    @torch.no_grad()
    def _reference_logps(self, engine: Any, rows: list[int], batch: Batch):
        if self.reference is not None:
            table = self.reference[rows].to(engine.device, torch.float32)
            return table[:, 0], table[:, 1]
        if self.reference_model is not None:
            return self._sequence_logps(self.reference_model, batch, len(rows))[1:]
        with engine.module.disable_adapter():  # LoRA: the base weights are the SFT model
            return self._sequence_logps(engine, batch, len(rows))[1:]

    @torch.no_grad()
    def _precompute(self, engine: Any) -> torch.Tensor:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        mine = list(range(rank, len(self.rows), world_size))
        size = self.cfg.micro_batch_size
        table = torch.zeros(len(self.rows), 2, dtype=torch.float64, device=engine.device)
        engine.eval()
        for k in range(math.ceil(math.ceil(len(self.rows) / world_size) / size)):
            rows = mine[k * size : (k + 1) * size]
            # Every worker runs as many forwards as the others: ZeRO-3 gathers weights collectively.
            _, batch = self.make_batch(rows or [0])
            _, chosen, rejected = self._sequence_logps(
                engine, batch.to(engine.device), len(rows or [0])
            )
            if rows:
                table[rows, 0], table[rows, 1] = chosen.double(), rejected.double()
        engine.train()
        dist.all_reduce(table)  # each row was filled by exactly one worker
        return table.cpu()


def self_play_targets(row: dict[str, Any], loss_type: str) -> tuple[float, float]:
    """A pair's (chosen, rejected) centred preferences for SPPO or GPO (:func:`sppo_loss`).

    SPPO: each answer's win rate against the prompt's samples, less 1/2, from the row's
    ``win_probabilities``. GPO: each answer's mean score difference, from the row's
    ``preference_table``; a scalar reward's scores stand in as the table ``T[i][j] = s_i``, whose
    differences are ``s_i - s_j``.

    Raises:
        ValueError: the row lacks what the loss reads (pairs written before these columns were).
    """
    needed = ["chosen_index", "rejected_index"] + (["win_probabilities"] * (loss_type == "sppo"))
    missing = [key for key in needed if row.get(key) is None]
    if missing:
        raise ValueError(
            f"loss_type {loss_type!r} reads {', '.join(missing)}, which pair {row.get('row_id')!r} "
            "lacks (written by an earlier version): write the preferences again with --fresh"
        )
    chosen, rejected = int(row["chosen_index"]), int(row["rejected_index"])
    if loss_type == "sppo":
        rates = win_rates(row["win_probabilities"])
        return rates[chosen] - 0.5, rates[rejected] - 0.5
    table = row.get("preference_table") or [[s] * len(row["scores"]) for s in row["scores"]]
    differences = mean_score_differences(table)
    return differences[chosen], differences[rejected]


def _chosen_mask(batch: Batch, num_pairs: int) -> torch.Tensor:
    segments = batch.segment_ids
    return (batch.targets != IGNORE_INDEX) & (segments >= 0) & (segments < num_pairs)


def _dpo_worker(loop_config: dict) -> None:
    train_worker(loop_config["spec"], DPOObjective)


def train_dpo(config: MoaaConfig, run_dir: str | Path, fresh: bool = False) -> dict:
    """DPO on ``<run_dir>/preferences`` from ``dpo.model`` or ``<run_dir>/sft/model``.

    ``fresh``: if the section, the starting model or the pairs changed, move the earlier checkpoints
    (with their reference log-probs) and model aside and train again (otherwise refused).

    The model is saved to ``<run_dir>/dpo/model``.

    Returns:
        Steps, final loss, the last step's metrics (reward accuracy, margin, log-probs), model path,
        checkpoint, seconds.
    """
    if config.dpo is None:
        raise ValueError("config has no 'dpo' section")
    if config.dpo.model is not None:
        model = config.models[config.dpo.model]
        start = (model.path, model.trust_remote_code)
    else:
        sft_model = Path(run_dir).resolve() / SFT / TRAINED_MODEL
        if not (sft_model / "config.json").exists():
            raise FileNotFoundError(f"{sft_model} does not exist: run `moaa sft` or set dpo.model")
        trust = config.models[config.sft.model].trust_remote_code if config.sft else False
        start = (str(sft_model), trust)
    return run_training(STAGE, config, run_dir, config.dpo, start, INPUT_STAGE, _dpo_worker, fresh)
