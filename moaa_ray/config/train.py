"""The training sections: ``sft`` and ``dpo``, Ray Train runs with DeepSpeed, and their LoRA."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from moaa_ray.config.base import OPERATIONAL, Section, check_min_max


class LoraConfig(Section):
    """LoRA adapters via peft; folded into the weights when the model is saved."""

    r: int = Field(16, ge=1, description="adapter rank")
    alpha: float = Field(32, gt=0, description="updates are scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"], description="names of the linear layers to adapt"
    )


class TrainConfig(Section):
    """A Ray Train run with DeepSpeed; the keys the SFT and DPO sections share."""

    model: str | None = Field(None, description="model name under 'models' to start from")
    data_path: str | None = Field(
        None, description="directory of part-*.parquet shards; None: the run's input stage folder"
    )
    learning_rate: float = Field(1e-5, gt=0, description="peak learning rate")
    num_epochs: int = Field(1, ge=1, description="passes over the data")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    global_batch_size: int = Field(128, ge=1, description="rows per optimizer step, all workers")
    micro_batch_size: int = Field(1, ge=1, description="rows per forward pass and worker")
    max_seq_len: int = Field(2048, ge=2, description="tokens per sequence; longer ones are cut")
    max_prompt_length: int | None = Field(
        None,
        ge=1,
        description="prompt tokens kept, its end (the start is cut, as TRL does); at most "
        "max_seq_len; None: prompts are not cut",
    )
    packing: bool = Field(
        False, description="padding-free packed rows; pays with flash_attention_2 kernels"
    )
    attn_implementation: str = Field("sdpa", description="transformers attention kernel")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="learning-rate decay after warmup"
    )
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="fraction of steps of linear warmup")
    optimizer: Literal["adamw", "rmsprop"] = Field(
        "adamw", description="torch AdamW (fused), or torch RMSprop (SPPO's recipe)"
    )
    weight_decay: float = Field(
        0.0, ge=0, description="weight decay (AdamW: decoupled; RMSprop: an L2 term)"
    )
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm; 0 = off")
    num_workers: list[int] = Field(
        [1, 1],
        description="[min, max] Ray Train workers; elastic when min < max",
        json_schema_extra=OPERATIONAL,
    )
    gpus_per_worker: float = Field(0, ge=0, description="0: CPU workers (gloo, fp32); else bf16")
    cpus_per_worker: float = Field(
        1, gt=0, description="logical CPUs per worker", json_schema_extra=OPERATIONAL
    )
    zero_stage: Literal[0, 2, 3] = Field(
        2,
        description="DeepSpeed ZeRO stage; 2 on a fixed single worker without offload trains at "
        "stage 0 (nothing to shard, and ZeRO-2's flat copies cost time)",
    )
    offload: bool = Field(False, description="optimizer state (ZeRO-3: also params) in CPU memory")
    lora: LoraConfig | None = Field(None, description="train LoRA adapters, not all weights")
    checkpoint_every_steps: int = Field(
        100,
        ge=1,
        description="checkpoint interval; also at the end",
        json_schema_extra=OPERATIONAL,
    )
    num_checkpoints_to_keep: int = Field(
        2, ge=1, description="older checkpoints are deleted", json_schema_extra=OPERATIONAL
    )
    max_failures: int = Field(
        3, ge=0, description="worker failures survived by resuming", json_schema_extra=OPERATIONAL
    )
    seed: int = Field(0, description="data order and initialization seed")

    @field_validator("num_workers")
    @classmethod
    def _min_max_workers(cls, value: list[int]) -> list[int]:
        return check_min_max(value)

    @field_validator("zero_stage")
    @classmethod
    def _zero3_fixed_workers(cls, value: int, info) -> int:
        workers = info.data.get("num_workers", [1, 1])
        if value == 3 and workers[0] != workers[1]:
            raise ValueError(
                "ZeRO-3 checkpoints resume only on the same worker count: fix num_workers"
            )
        return value

    @model_validator(mode="after")
    def _batch_covers_workers(self) -> TrainConfig:
        if self.global_batch_size < self.num_workers[1]:
            raise ValueError(
                f"global_batch_size={self.global_batch_size} gives some of the up to "
                f"{self.num_workers[1]} workers no rows: raise it or lower num_workers"
            )
        return self

    @model_validator(mode="after")
    def _prompt_fits_sequence(self) -> TrainConfig:
        if self.max_prompt_length is not None and self.max_prompt_length > self.max_seq_len:
            raise ValueError(
                f"max_prompt_length={self.max_prompt_length} exceeds "
                f"max_seq_len={self.max_seq_len}: lower max_prompt_length"
            )
        return self

    @field_validator("offload")
    @classmethod
    def _offload_needs_zero(cls, value: bool, info) -> bool:
        if value and info.data.get("zero_stage") == 0:
            raise ValueError("offload needs zero_stage 2 or 3")
        return value


class SFTConfig(TrainConfig):
    """Supervised fine-tuning of the target model on the MoA dataset (loss on assistant tokens)."""

    model: str = Field(description="model name under 'models' to fine-tune")
    learning_rate: float = Field(8e-6, gt=0, description="peak learning rate (paper: 8e-6)")


class DPOConfig(TrainConfig):
    """DPO from the SFT model (also the reference) on the MoA-judged preference pairs."""

    model: str | None = Field(
        None, description="model name under 'models'; None: the run's sft/model"
    )
    learning_rate: float = Field(5e-7, gt=0, description="peak learning rate")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="fraction of steps of linear warmup")
    beta: float = Field(0.1, gt=0, description="strength of the pull towards the reference")
    loss_type: Literal["sigmoid", "ipo", "robust", "sppo", "gpo"] = Field(
        "sigmoid",
        description="sigmoid: DPO (cDPO with label_smoothing); ipo; robust: robust DPO; sppo: "
        "SPPO, each answer's log-ratio regressed onto its win rate among the prompt's samples "
        "(the mean of its row of the pair's win_probabilities); gpo: GPO, onto its mean score "
        "difference against them (a pairwise table's, or a scalar reward's)",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed label-flip rate")
    sft_loss_weight: float = Field(0.0, ge=0, description="adds this times the chosen answers' NLL")
    precompute_ref_logprobs: bool = Field(
        True, description="reference log-probs computed once before training, not every step"
    )
    swap_pairs: bool = Field(
        False,
        description="negative control: train on every pair with chosen and rejected swapped; "
        "the model should get worse",
    )
