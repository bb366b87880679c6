"""Where a run keeps its outputs: each stage's folder name and the folder of each round.

A run directory holds ``generate/``, ``sft/`` and ``evaluate/``; ``base/evaluate/`` for the starting
model; and ``round-<r>/`` with round ``r``'s ``preferences/``, ``dpo/`` and ``evaluate/``
(``round-0/evaluate/`` is the SFT model's). A stage's name is its folder's name, and inside a round
the run names it ``round-<r>/<stage>``.
"""

from __future__ import annotations

GENERATE = "generate"
PREFERENCES = "preferences"
SFT = "sft"
DPO = "dpo"
EVALUATE = "evaluate"
BASE = "base"  # the starting model's evaluation: base/evaluate/
TRAINED_MODEL = "model"  # a training stage's saved model: sft/model/, round-<r>/dpo/model/
ROUND_PREFIX = "round-"


def round_folder(index: int) -> str:
    """``round-<index>``: round ``index``'s folder (round 0 holds the SFT model's evaluation)."""
    return f"{ROUND_PREFIX}{index}"


def is_round_folder(name: str) -> bool:
    """Whether a folder name is a round's (``round-<r>``)."""
    return name.startswith(ROUND_PREFIX)


def in_folder(folder: str, stage: str) -> str:
    """A stage's name inside a round's or the base model's folder: ``round-1/dpo``,
    ``base/evaluate``."""
    return f"{folder}/{stage}"
