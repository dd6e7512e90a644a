#!/usr/bin/env bash
# Re-lock the runtime dependency tree after changing pyproject.toml's dependencies: requirements.lock
# pins every package a deployed function installs, with hashes, for Python 3.11+ on any platform.
# The test venv (scripts/bootstrap.sh), every bundle (`openrouter-functions bundle`) and the Docker image
# install exactly this file; tests/test_lock.py fails when it no longer matches pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
  --no-emit-index-url --custom-compile-command "bash scripts/lock.sh" --quiet -o requirements.lock
echo "requirements.lock: $(grep -c '==' requirements.lock) packages"
