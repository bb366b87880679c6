"""The ``moaa`` command: one subcommand per stage, each ``--config FILE [--run-dir DIR] [key=value]``.

Heavy libraries load only once a subcommand runs, so ``moaa --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

STAGES = {
    "generate": "write the MoA SFT dataset (layered proposers + aggregator) from prompts",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="moaa", description="Mixture-of-Agents Alignment on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in STAGES.items():
        stage = sub.add_parser(name, help=help_text, description=help_text)
        stage.add_argument("--config", required=True, help="YAML config file")
        stage.add_argument("--run-dir", help="run directory (default: run_dir from the config)")
        stage.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config, run the stage and print its summary as JSON."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from moaa_ray.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    run_dir = args.run_dir or config.run_dir
    if args.command == "generate":
        from moaa_ray.pipeline.sft_generation import generate_sft

        summary = generate_sft(config, run_dir)
    print(json.dumps({"stage": args.command, "run_dir": run_dir, **summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
