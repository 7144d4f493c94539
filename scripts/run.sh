#!/usr/bin/env bash
# Installs dependencies, builds and starts ailb with its embedded defaults (SQLite + hnswlib in
# ./data, local embedder). Configure providers with environment variables first, e.g.
#   OPENAI_API_KEY=sk-... OPENAI_MODELS=gpt-4o-mini scripts/run.sh
#   OLLAMA_MODELS=llama3.2 scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
mkdir -p "${AILB_DATA_DIR:-./data}"
exec ./build/ailb "$@"
