"""The ``moaa`` command: one subcommand per stage, each ``--config FILE [--run-dir DIR] [key=value]``.

``moaa serve --model PATH`` instead puts a trained model behind an OpenAI-compatible HTTP route;
``moaa validate --config FILE`` checks a config completely without starting Ray.
Heavy libraries load only once a subcommand runs, so ``moaa --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from moaa_ray.callables import load_callable
from moaa_ray.serve.command import add_serve_parser, serve
from moaa_ray.stages.layout import DPO, SFT, STAGES, find_stage

RUN = "run"  # the subcommand that runs every stage in order (moaa_ray.orchestrator)
RUN_HELP = "the whole pipeline: MoA SFT data, SFT, rounds of sample/judge/DPO, evaluation"


def stage_function(command: str) -> Callable[..., dict]:
    """The function that runs a subcommand, taking ``(config, run_dir, fresh=...)`` and returning
    its summary: a stage's entry point, or the whole pipeline's; imported only here, since the
    stages load Ray and the ML libraries.

    Raises:
        ValueError: when ``command`` is neither ``run`` nor a stage.
    """
    if command == RUN:
        from moaa_ray.orchestrator import run_pipeline

        return run_pipeline
    return load_callable(find_stage(command).entry_point)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="moaa", description="Mixture-of-Agents Alignment on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = [(RUN, RUN_HELP), *((s.name, s.description) for s in STAGES)]
    for name, help_text in commands:
        stage = sub.add_parser(name, help=help_text, description=help_text)
        stage.add_argument("--config", required=True, help="YAML config file")
        stage.add_argument("--run-dir", help="run directory (default: run_dir from the config)")
        stage.add_argument(
            "--fresh",
            action="store_true",
            help="redo stages whose config, models or inputs changed since they ran, moving their "
            "earlier outputs to <run_dir>/superseded/ (without it such a rerun is refused)",
        )
        stage.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="also show Ray's, the libraries' and the actors' log lines (always in <run_dir>/logs/)",
        )
        stage.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    add_serve_parser(sub)
    _add_config_parser(sub)
    _add_validate_parser(sub)
    return parser


def _add_validate_parser(sub) -> None:
    help_text = (
        "check a config completely without starting Ray: schema, model references, the files it "
        "reads, the functions it names and, with --cluster, each stage's GPUs; lists every problem"
    )
    command = sub.add_parser("validate", help=help_text, description=help_text)
    command.add_argument("--config", required=True, help="YAML config file")
    command.add_argument(
        "--cluster",
        help="Ray cluster-launcher YAML (e.g. cluster.yaml): each stage's GPUs must fit its node "
        "types at max_workers",
    )
    command.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _validate(args: argparse.Namespace) -> int:
    """Print every problem of the config (exit 2), or that it is valid (exit 0), and notes."""
    from moaa_ray.config.validation import format_report, validate_config
    from moaa_ray.redact import scrub

    report = validate_config(args.config, args.overrides, args.cluster)
    print(
        scrub(format_report(args.config, report)),
        file=sys.stderr if report.problems else sys.stdout,
    )
    return EXIT_USAGE if report.problems else 0


def _add_config_parser(sub) -> None:
    help_text = "print every config key (type, default, description), or a config as loaded"
    command = sub.add_parser("config", help=help_text, description=help_text)
    shown = command.add_mutually_exclusive_group(required=True)
    shown.add_argument("--schema", action="store_true", help="every key the config accepts")
    shown.add_argument("--config", help="print this config with its overrides and defaults applied")
    command.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _show_config(args: argparse.Namespace) -> int:
    from moaa_ray.config import ConfigError, dump_config, load_config
    from moaa_ray.redact import redact

    if args.schema:
        from moaa_ray.config.reference import config_keys, format_reference

        print(format_reference(config_keys()))
        return 0
    import yaml

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        return _fail(f"config error: {exc}", EXIT_USAGE)
    print(yaml.safe_dump(redact(dump_config(config)), sort_keys=False), end="")
    return 0


# Earlier names of subcommands, still accepted but not listed.
ALIASES = {"train-sft": SFT, "train-dpo": DPO}

EXIT_ERROR = 1  # the stage failed (engine, cluster, stall); the message says why
EXIT_USAGE = 2  # bad config, changed fingerprint without --fresh, run directory in use


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config, run the stage and print its summary table.

    Returns:
        0 when every row was written; 3 when rows failed (rerun to retry them); 4 when the stage
        kept nothing usable (no SFT row, DPO pair or scored question); 2 for usage errors; 1 when
        the stage failed.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ALIASES:
        argv[0] = ALIASES[argv[0]]
    args = build_parser().parse_args(argv)
    if args.command == "config":
        return _show_config(args)
    if args.command == "validate":
        return _validate(args)
    if args.command == "serve":
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        return serve(args)
    from moaa_ray.config import ConfigError, dump_config, load_config
    from moaa_ray.redact import register_secrets

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        return _fail(f"config error: {exc}", EXIT_USAGE)
    register_secrets(dump_config(config))
    from ray.exceptions import RayError

    from moaa_ray import console
    from moaa_ray.pools.dispatch import EngineFailure
    from moaa_ray.stages.rundir import RunLocked
    from moaa_ray.stages.runner import (
        EXIT_CODES,
        EXIT_NOTHING_WRITTEN,
        FingerprintMismatch,
        StageStalled,
    )
    from moaa_ray.train.recipe import TooFewRows

    run_dir = Path(args.run_dir or config.run_dir)
    log_file = console.setup(run_dir, args.verbose)
    console.say(f"moaa {args.command} · run directory {run_dir.resolve()} · log {log_file}")
    stage = stage_function(args.command)
    console.route_library_logs()  # the stage's imports brought Ray's and Ray Data's handlers
    try:
        summary = stage(config, run_dir, fresh=args.fresh)
    except (FingerprintMismatch, RunLocked) as exc:
        return _fail(f"{args.command}: {exc}", EXIT_USAGE)
    except TooFewRows as exc:  # the stage before kept too little: say so, as an empty stage does
        return _fail(f"{args.command} stopped: {exc}", EXIT_NOTHING_WRITTEN)
    except (EngineFailure, StageStalled, FileNotFoundError) as exc:
        return _stage_failed(args.command, f"{type(exc).__name__}: {exc}", exc, log_file)
    except RayError as exc:  # raised in a Ray Data task: the original arrives as traceback text
        reason = _moaa_error_line(str(exc))
        if reason is None:
            raise
        return _stage_failed(args.command, reason, exc, log_file)
    if args.command != RUN:  # one stage: a table of one line
        stages = {args.command: summary}
        summary = {
            "stages": stages,
            "run_dir": str(run_dir),
            "final_model": summary.get("model_path"),
            **summary,
        }
    table = console.format_table(summary)
    (run_dir / "summary.txt").write_text(table + "\n")
    console.say(table)
    return EXIT_CODES[summary.get("status", "done")]


def _stage_failed(command: str, reason: str, error: BaseException, log_file: Path) -> int:
    """Say in one line what failed, then where its traceback is: the log file, and with ``-v``
    the console (the traceback is logged at INFO, which only verbose consoles show)."""
    logging.getLogger(__name__).info("%s failed", command, exc_info=error)
    headline = reason.strip().splitlines()[0]
    return _fail(f"{command} failed: {headline}\n  traceback: {log_file}", EXIT_ERROR)


def _fail(message: str, code: int) -> int:
    """Say why on stderr, credentials masked; return the exit code."""
    from moaa_ray.redact import scrub

    print(scrub(message), file=sys.stderr)
    return code


def _moaa_error_line(text: str) -> str | None:
    """The last ``moaa_ray.<module>.<Error>: message`` line of a remote traceback, if any."""
    lines = [line for line in text.splitlines() if line.startswith("moaa_ray.")]
    if not lines:
        return None
    name, _, message = lines[-1].partition(": ")
    return f"{name.rsplit('.', 1)[-1]}: {message}"


if __name__ == "__main__":
    sys.exit(main())
