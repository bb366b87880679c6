#!/usr/bin/env bash
# Install (first time) and run the whole MoAA pipeline on the embedded default: a local Ray cluster,
# tiny offline models, prompts shipped in the package, CPU only.  Extra arguments are config overrides.
#   bash scripts/demo.sh [key=value ...]          tiny random models: proves the machinery (~3 min)
#   bash scripts/demo.sh --real [key=value ...]   SmolLM2-135M-Instruct in every role: real text
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 DS_ACCELERATOR=cpu
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
config=configs/demo.yaml
if [[ "${1:-}" == "--real" ]]; then
  config=configs/smollm2.yaml
  shift
fi
[[ -x .venv/bin/moaa ]] || bash scripts/install.sh .venv
exec .venv/bin/moaa run --config "$config" "$@"
