#!/usr/bin/env bash
# Install (first time) and run the whole MoAA pipeline on the embedded default: a local Ray cluster,
# tiny offline models, prompts shipped in the package, CPU only.  Extra arguments are config overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 DS_ACCELERATOR=cpu
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[[ -x .venv/bin/moaa ]] || bash scripts/install.sh .venv
exec .venv/bin/moaa run --config configs/demo.yaml "$@"
