#!/usr/bin/env bash
# The whole test suite: lint, format check, strict types, then pytest. README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL 15 and pgTAP for the database tests (skipped when TEST_DATABASE_URL points at a server).
if [ -z "${TEST_DATABASE_URL:-}" ] && { [ ! -x /usr/lib/postgresql/15/bin/initdb ] || [ ! -f /usr/share/postgresql/15/extension/pgtap.control ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing postgresql-15 and pgTAP"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-15-pgtap >/dev/null
  else
    echo "PostgreSQL 15 with pgTAP is needed: apt-get install postgresql-15 postgresql-15-pgtap (or set TEST_DATABASE_URL)" >&2
    exit 1
  fi
fi

bash scripts/bootstrap.sh
echo "== ruff"; .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy --strict"; .venv/bin/mypy
for fn in functions/*/main.py; do .venv/bin/mypy --strict --follow-imports=silent "$fn"; done
echo "== pytest"; .venv/bin/pytest -q -p no:cacheprovider "$@"
