"""``moaa serve``: its arguments, and serving one model until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import threading


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
    serve.add_argument("--served-model-name", help="name clients pass as model (default: --model)")
    serve.add_argument("--trust-remote-code", action="store_true", help="run the model's code")


def serve(args: argparse.Namespace) -> int:
    """Deploy the model, print the base URL and serve until Ctrl-C."""
    from pydantic import ValidationError

    from moaa_ray.config import ModelConfig

    num_gpus = args.num_gpus if args.num_gpus is not None else float(args.engine == "vllm")
    try:
        config = ModelConfig(
            path=args.model,
            engine=args.engine,
            num_replicas=[args.num_replicas, args.num_replicas],
            num_gpus=num_gpus,
            trust_remote_code=args.trust_remote_code,
        )
    except ValidationError as exc:
        print(f"serve: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    from ray import serve as ray_serve

    from moaa_ray.serve.openai_app import APP_NAME, run_server

    name = args.served_model_name or args.model
    url = run_server(config, name, args.host, args.port)
    print(f"serving {name} at {url} (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    ray_serve.delete(APP_NAME)
    return 0
