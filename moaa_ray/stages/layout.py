"""The stages and where a run keeps their outputs: the table of stages, each stage's folder name and
the folder of each round.

A run directory holds ``generate/``, ``sft/`` and ``evaluate/``; ``base/evaluate/`` for the starting
model; and ``round-<r>/`` with round ``r``'s ``preferences/``, ``dpo/`` and ``evaluate/``
(``round-0/evaluate/`` is the SFT model's). A stage's name is its folder's name, and inside a round
the run names it ``round-<r>/<stage>``.

:data:`STAGES` is the one table of stages: the ``moaa`` subcommands, the job scripts and the stage
functions of ``moaa run`` come from it. Its entry points are strings, loaded only by whoever runs a
stage, so this module imports nothing of the stages.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes:
        name: its ``moaa`` subcommand, its job script (``jobs/<name>.py``) and its manifest entry.
        folder: the folder it writes, in the run directory or in a round's folder.
        entry_point: ``package.module:function`` that runs it, taking ``(config, run_dir, fresh=...)``
            and returning its summary.
        description: what it does, as ``moaa --help`` says it.
    """

    name: str
    folder: str
    entry_point: str
    description: str


# In the order ``moaa run`` runs them (the rounds repeat preferences and DPO).
STAGES = (
    Stage(
        GENERATE,
        GENERATE,
        "moaa_ray.pipeline.generate:generate_sft",
        "write the MoA SFT dataset (layered proposers + aggregator) from prompts",
    ),
    Stage(
        SFT,
        SFT,
        "moaa_ray.train.sft:train_sft",
        "fine-tune the target model on the MoA dataset (Ray Train + DeepSpeed)",
    ),
    Stage(
        PREFERENCES,
        PREFERENCES,
        "moaa_ray.pipeline.preferences:build_preferences",
        "sample K answers per prompt, rank them with the judge ensemble, write DPO pairs",
    ),
    Stage(
        DPO,
        DPO,
        "moaa_ray.train.dpo:train_dpo",
        "DPO from the SFT model on the preference pairs (Ray Train + DeepSpeed)",
    ),
    Stage(
        EVALUATE,
        EVALUATE,
        "moaa_ray.pipeline.evaluate.stage:evaluate",
        "judge the model against a baseline: win rates, LC win rate, BT score, MT-Bench grades",
    ),
)


def find_stage(name: str) -> Stage:
    """The stage called ``name``.

    Raises:
        ValueError: when no stage has that name.
    """
    for known in STAGES:
        if known.name == name:
            return known
    raise ValueError(f"no stage is called {name!r}")
