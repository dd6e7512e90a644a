#!/usr/bin/env bash
# Serve chat, completion and health locally on one port (offline mode when no key is configured).
# Arguments go to `openrouter-functions serve` (--host, --port). Installs only what serving needs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh serve
# The example web page (examples/web, served at /app/ in offline mode) loads supabase-js and the openai
# SDK from its own node_modules: installed once, pinned by its package-lock.json, when npm is present.
if [ ! -d examples/web/node_modules ] && command -v npm >/dev/null 2>&1; then
  npm ci --prefix examples/web --no-audit --no-fund --loglevel=error >/dev/null 2>&1 \
    || echo "note: npm ci in examples/web failed; the functions work, the example page will not load" >&2
fi
exec .venv/bin/openrouter-functions serve "$@"
