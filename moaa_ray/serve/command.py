"""``moaa serve``: its arguments, and serving one model until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from moaa_ray.serve.protocol import DEFAULT_REQUEST_TIMEOUT_S

if TYPE_CHECKING:
    from moaa_ray.config import ModelConfig
    from moaa_ray.serve.openai_app import ServeSettings


def add_serve_parser(sub) -> None:
    """Add ``moaa serve`` to the subcommands."""
    help_text = "serve a trained model over OpenAI-compatible HTTP (Ray Serve) until Ctrl-C"
    serve = sub.add_parser("serve", help=help_text, description=help_text)
    serve.add_argument("--model", required=True, help="model directory or tiny:<name>")
    serve.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="hf: CPU; vllm: GPU")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--num-replicas", type=int, default=1, help="model copies behind the route")
    serve.add_argument("--num-gpus", type=float, help="GPUs per replica (default: 1 vllm, 0 hf)")
    serve.add_argument(
        "--num-cpus",
        type=float,
        help="CPUs per replica; the hf engine computes with that many threads (default: 1)",
    )
    serve.add_argument("--served-model-name", help="name clients pass as model (default: --model)")
    serve.add_argument("--trust-remote-code", action="store_true", help="run the model's code")
    serve.add_argument(
        "--max-batch-size",
        type=int,
        help="hf: most requests that share one batch of forward passes (default: 16)",
    )
    serve.add_argument(
        "--request-timeout-s",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help="a request still unanswered after this many seconds gets a 504 (default: "
        f"{DEFAULT_REQUEST_TIMEOUT_S:g})",
    )
    serve.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require 'Authorization: Bearer <key>' on every route, the key read from $VAR",
    )


def serve(args: argparse.Namespace) -> int:
    """Deploy the model, print the base URL and serve until Ctrl-C."""
    try:
        config, settings = read_serve_args(args, os.environ)
    except ValueError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    from moaa_ray.serve.security import exposure_warning

    warning = exposure_warning(args.host, settings.api_key_sha256 is not None)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    from ray import serve as ray_serve

    from moaa_ray.serve.openai_app import APP_NAME, run_server

    url = run_server(config, settings, args.host, args.port)
    print(f"serving {settings.served_model_name} at {url} (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    ray_serve.delete(APP_NAME)
    return 0


def read_serve_args(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[ModelConfig, ServeSettings]:
    """The model to serve and how the HTTP app answers, from ``moaa serve``'s arguments.

    Args:
        args: the parsed arguments.
        environ: the environment, which holds the API key named by ``--api-key-env``.

    Returns:
        The model's config and the app's settings (with the key's digest, never the key).

    Raises:
        ValueError: saying which argument is wrong.
    """
    from pydantic import ValidationError

    from moaa_ray.config import ModelConfig
    from moaa_ray.serve.openai_app import ServeSettings
    from moaa_ray.serve.security import key_digest, read_api_key

    if args.request_timeout_s <= 0:
        raise ValueError("--request-timeout-s must be > 0")
    key = read_api_key(args.api_key_env, environ) if args.api_key_env else None
    optional = {"num_cpus": args.num_cpus, "max_batch_size": args.max_batch_size}
    try:
        config = ModelConfig(
            path=args.model,
            engine=args.engine,
            num_replicas=[args.num_replicas, args.num_replicas],
            num_gpus=args.num_gpus if args.num_gpus is not None else float(args.engine == "vllm"),
            trust_remote_code=args.trust_remote_code,
            **{key: value for key, value in optional.items() if value is not None},
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ValueError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    settings = ServeSettings(
        served_model_name=args.served_model_name or args.model,
        request_timeout_s=args.request_timeout_s,
        api_key_sha256=key_digest(key) if key else None,
    )
    return config, settings
