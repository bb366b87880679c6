"""The whole MoAA pipeline: MoA SFT data -> SFT -> (sample, judge, DPO) x iterations -> evaluate.

Sections that are absent are skipped: without ``sft`` the rounds start from ``preferences.policy``
(Snorkel's and SPPO's recipes, which start from an instruct model), and without ``generate`` SFT
reads its ``data_path``.

Every stage resumes on its own (finished rows, checkpoints and models are kept), so rerunning the same
command continues where a stopped run left off. A stage that did not finish every row, or kept
nothing usable (no SFT row, no DPO pair), stops the run there (its status says why), so no later
stage trains or evaluates on incomplete or empty data. Round ``r`` of sample/judge/DPO lives in
``<run_dir>/round-<r>/``; its policy is the previous round's model (round 1: the SFT model), and it
reads the r-th slice of the preference prompts (Snorkel / SPPO-style iterative DPO). With
``evaluate.every_round`` the starting model (``base/evaluate/``), the SFT model
(``round-0/evaluate/``) and each round's model but the last (``round-<r>/evaluate/``) are evaluated
too (:func:`~moaa_ray.pipeline.evaluate.report.evaluated_models`), and the final report compares them all.
The run's summary and manifest list, under ``models``,
each stage's model with its path and the accuracy of its verified benchmarks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from moaa_ray.callables import load_callable
from moaa_ray.config import MoaaConfig, ModelConfig
from moaa_ray.stages.layout import (
    BASE,
    DPO,
    EVALUATE,
    GENERATE,
    PREFERENCES,
    SFT,
    STAGES,
    in_folder,
    round_folder,
)
from moaa_ray.stages.rundir import RunDir

logger = logging.getLogger(__name__)

TRAINED_POLICY = "trained-policy"  # the model entry each round points at its starting checkpoint
# The models list's entry for the MoA SFT answers, which no model of their own produced.
MOA_ANSWERS = "moa-answers"


def starting_model(config: MoaaConfig) -> str | None:
    """The model name the run trains from: the SFT model, else the preference policy."""
    if config.sft:
        return config.sft.model
    return config.preferences.policy if config.preferences else None


def with_trained_policy(config: MoaaConfig, model_path: str) -> MoaaConfig:
    """The config with the policy, DPO start/reference and evaluated model set to ``model_path``
    (with the starting model's engine settings)."""
    start = starting_model(config)
    base = config.models[start] if start else ModelConfig(path=model_path)
    policy = base.model_copy(update={"path": model_path})
    models = {**config.models, TRAINED_POLICY: policy}
    update: dict = {"models": models}
    if config.preferences:
        update["preferences"] = config.preferences.model_copy(update={"policy": TRAINED_POLICY})
    if config.dpo:
        update["dpo"] = config.dpo.model_copy(update={"model": TRAINED_POLICY})
    if config.evaluate:
        update["evaluate"] = config.evaluate.model_copy(update={"model": TRAINED_POLICY})
    return config.model_copy(update=update)


class StageIncomplete(Exception):
    """A stage ended without every row; the run stops there."""


def run_pipeline(config: MoaaConfig, run_dir: str | Path, fresh: bool = False) -> dict:
    """Run every stage in order; finished stages are skipped, unfinished ones resume. Each stage
    runs its entry point in the table of stages (:data:`~moaa_ray.stages.layout.STAGES`).

    Args:
        config: the run's config.
        run_dir: the run directory (round ``r`` in ``round-<r>/``).
        fresh: stages whose fingerprint changed start over (earlier outputs moved aside).

    Returns:
        Per stage: its summary and seconds; plus ``final_model``, ``run_dir`` and ``status``
        (``done``, or the status of the stage the run stopped at).
    """
    from moaa_ray.pipeline.evaluate.report import evaluated_models

    entry = {stage.name: load_callable(stage.entry_point) for stage in STAGES}
    root = Path(run_dir)
    stages: dict[str, dict] = {}

    def timed(name: str, function, *args, **kwargs) -> dict:
        started = time.monotonic()
        summary = function(*args, fresh=fresh, **kwargs)
        stages[name] = {**summary, "seconds": round(time.monotonic() - started, 1)}
        if summary.get("status", "done") != "done":
            raise StageIncomplete(name)
        return stages[name]

    start = starting_model(config)
    model_path = config.models[start].path if start else None
    earlier = {folder for _, folder in evaluated_models(config)}  # what the report will list
    with RunDir(root).lock():
        try:
            if BASE in earlier:
                assert model_path is not None  # base is evaluated only when the run has a start
                base = with_trained_policy(config, model_path)
                timed(in_folder(BASE, EVALUATE), entry[EVALUATE], base, root / BASE)
            # 1. MoA SFT data, then SFT of the target model.
            if config.generate:
                timed(GENERATE, entry[GENERATE], config, root)
            if config.sft:
                model_path = timed(SFT, entry[SFT], config, root)["model_path"]
                sft_folder = round_folder(0)
                if sft_folder in earlier:
                    sft_model = with_trained_policy(config, model_path)
                    timed(
                        in_folder(sft_folder, EVALUATE),
                        entry[EVALUATE],
                        sft_model,
                        root / sft_folder,
                    )
            # 2. Rounds of on-policy sampling, judging and DPO, each from the last round's model.
            for index in range(config.iterations):
                assert model_path is not None, "rounds need sft or preferences.policy to start"
                round_config = with_trained_policy(config, model_path)
                folder = round_folder(index + 1)
                round_dir = root / folder
                timed(
                    in_folder(folder, PREFERENCES),
                    entry[PREFERENCES],
                    round_config,
                    round_dir,
                    slice_index=index,
                    num_slices=config.iterations,
                )
                dpo = timed(in_folder(folder, DPO), entry[DPO], round_config, round_dir)
                model_path = dpo["model_path"]
                if folder in earlier:
                    dpo_model = with_trained_policy(config, model_path)
                    timed(in_folder(folder, EVALUATE), entry[EVALUATE], dpo_model, round_dir)
            # 3. Evaluate the final model against the baseline.
            if config.evaluate:
                evaluated = with_trained_policy(config, model_path) if model_path else config
                timed(EVALUATE, entry[EVALUATE], evaluated, root)
        except StageIncomplete as stop:
            status = stages[str(stop)]["status"]
            why = "rerun the same command to retry"
            if status == "empty":  # a rerun keeps nothing either, unless rows failed
                why = f"{stages[str(stop)].get('warning')}; nothing to go on with"
            logger.error("stopped after %s (%s): %s", stop, status, why)
        else:
            status = "done"
        models = model_progress(config, stages)
        RunDir(root).record(models=models)
    return {
        "stages": stages,
        "models": models,
        "final_model": model_path,
        "run_dir": str(root),
        "status": status,
    }


def model_progress(config: MoaaConfig, stages: dict[str, dict]) -> list[dict]:
    """Each model the run went through, in order, with its path and the accuracy measured on it.

    ``base`` is the model the run starts from (evaluated in ``base/evaluate`` with
    ``every_round``);
    ``moa-answers`` is the verifier's accuracy of the MoA SFT answers (no model); then ``sft`` and
    each ``round-<r>/dpo``, whose accuracy comes from the evaluation of that model (the last one's
    from ``evaluate``). A model's accuracy is ``{benchmark: accuracy}`` over its verified
    benchmarks; ``moa-answers``'s is the share of correct MoA answers, beside each proposer's;
    ``None`` where nothing measured it.
    """
    trained = [name for name in stages if name == SFT or name.endswith(f"/{DPO}")]
    evaluations = [name for name in stages if name.endswith(EVALUATE)]
    progress = []
    start = starting_model(config)
    if start:
        base = stages.get(in_folder(BASE, EVALUATE), {})
        progress.append(
            {
                "stage": BASE,
                "model_path": config.models[start].path,
                "accuracy": base.get("accuracy"),
            }
        )
    if GENERATE in stages:
        verifier = stages[GENERATE].get("verifier") or {}
        progress.append(
            {
                "stage": MOA_ANSWERS,
                "model_path": None,
                "accuracy": verifier.get("accuracy"),
                "proposer_accuracy": verifier.get("proposer_accuracy"),
            }
        )
    for index, name in enumerate(trained):
        # The SFT model is evaluated in round-0/evaluate, round r's model in round-r/evaluate, and
        # the last model in evaluate.
        round_dir = round_folder(0) if name == SFT else name.split("/")[0]
        evaluated = EVALUATE if index == len(trained) - 1 else in_folder(round_dir, EVALUATE)
        result = stages.get(evaluated, {}) if evaluated in evaluations else {}
        progress.append(
            {
                "stage": name,
                "model_path": stages[name].get("model_path"),
                "accuracy": result.get("accuracy"),
            }
        )
    return progress
