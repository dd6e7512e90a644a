#!/usr/bin/env bash
# Serve chat, completion and health locally on one port (offline mode when no key is configured).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/openrouter-functions serve "$@"
