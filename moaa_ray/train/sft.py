"""SFT of the target model on the MoA dataset: next-token loss on the assistant turns only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from moaa_ray.config import MoaaConfig
from moaa_ray.stages.layout import GENERATE, SFT
from moaa_ray.train.collate import Batch, Example, collate, encode_conversation, keep_trainable
from moaa_ray.train.launch import run_training
from moaa_ray.train.losses import IGNORE_INDEX, token_logprobs
from moaa_ray.train.worker import WorkerSpec, read_training_rows, train_worker

STAGE = SFT
INPUT_STAGE = GENERATE


class SFTObjective:
    """Token-level NLL of the assistant tokens, averaged over all of a step's trained tokens."""

    def __init__(self, spec: WorkerSpec, tokenizer: Any):
        self.tokenizer = tokenizer
        self.cfg = spec.train
        rows = [row["messages"] for row in read_training_rows(spec.data_path, ["messages"])]
        self.rows, self.rows_dropped = keep_trainable(
            rows, lambda messages: [self._encode(messages)]
        )
        self.lengths = [sum(len(m["content"]) for m in messages) for messages in self.rows]

    def make_batch(self, rows: list[int]) -> Batch:
        """Tokenize conversations with the model's chat template and collate them."""
        examples = [self._encode(self.rows[i]) for i in rows]
        return collate(examples, self.tokenizer.pad_token_id, self.cfg.packing)

    def _encode(self, messages: list[dict[str, str]]) -> Example:
        return encode_conversation(
            self.tokenizer, messages, self.cfg.max_seq_len, self.cfg.max_prompt_length
        )

    def counts(self, batch: Batch) -> dict[str, float]:
        """Trained (assistant) tokens and all tokens."""
        return {"targets": int((batch.targets != IGNORE_INDEX).sum()), "tokens": batch.num_tokens}

    def loss(
        self, engine: Any, batch: Batch, totals: dict[str, float]
    ) -> tuple[torch.Tensor, dict]:
        """This batch's share of the step's mean token NLL."""
        batch = batch.to(engine.device)
        logits = engine(**batch.inputs, use_cache=False).logits
        nll = -token_logprobs(logits, batch.targets).sum() / max(totals["targets"], 1)
        return nll, {"loss": nll.detach()}

    def prepare(self, engine: Any, checkpoint_dir: str | None) -> None:
        """Nothing to prepare for SFT."""

    def save(self, checkpoint_dir: str) -> None:
        """SFT keeps no state beyond the engine's."""


def _sft_worker(loop_config: dict) -> None:
    train_worker(loop_config["spec"], SFTObjective)


def train_sft(config: MoaaConfig, run_dir: str | Path, fresh: bool = False) -> dict:
    """Fine-tune ``sft.model`` on ``<run_dir>/generate`` and save it to ``<run_dir>/sft/model``.

    ``fresh``: if the section, the starting model or the data changed, move the earlier checkpoints
    and model aside and train again (otherwise such a rerun is refused).

    Returns:
        Steps, final loss, the last step's metrics, model path, checkpoint, seconds.
    """
    if config.sft is None:
        raise ValueError("config has no 'sft' section")
    model = config.models[config.sft.model]
    return run_training(
        STAGE,
        config,
        run_dir,
        config.sft,
        (model.path, model.trust_remote_code),
        INPUT_STAGE,
        _sft_worker,
        fresh,
    )
