#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install the project; quiet when already done.
#   bash scripts/bootstrap.sh          the project with its dev tools (tests, linters)
#   bash scripts/bootstrap.sh serve    only what serving needs (scripts/serve.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-dev}
case "$mode" in
  dev | serve) ;;
  *) echo "usage: bootstrap.sh [dev|serve]" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
  "$PYTHON" -m venv .venv
fi
hash=$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
# A dev install holds everything serving needs: it satisfies both modes.
if [ -f ".venv/.installed-dev-$hash" ] || [ -f ".venv/.installed-$mode-$hash" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The runtime tree exactly as requirements.lock pins it (hash-checked): what bundles and the image ship,
# so the tests run the versions that deploy. Then the project itself (and, for dev, its tools).
.venv/bin/python -m pip install --quiet --require-hashes --requirement requirements.lock
.venv/bin/python -m pip install --quiet --no-deps -e .
if [ "$mode" = dev ]; then
  .venv/bin/python -m pip install --quiet -e ".[dev]"
fi
rm -f .venv/.installed-* && touch ".venv/.installed-$mode-$hash"
