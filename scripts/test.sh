#!/usr/bin/env bash
# The whole test suite: lint, format check, strict types, then pytest. README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: PostgreSQL 15 with pgTAP and pg_cron (database tests), promtool (alert
# rules), Chromium (the example page in a real browser), Node.js with npm (supabase-js through the Edge
# front door) and openssl (a CA directory's hashed names in the TLS tests). Installed when missing and we
# are root; otherwise we say what is needed.
packages="postgresql-15 postgresql-15-pgtap postgresql-15-cron prometheus chromium openssl"
command -v npm >/dev/null || packages="$packages nodejs npm"
if [ ! -x /usr/lib/postgresql/15/bin/initdb ] || [ ! -f /usr/share/postgresql/15/extension/pgtap.control ] \
   || [ ! -f /usr/share/postgresql/15/extension/pg_cron.control ] || ! command -v promtool >/dev/null \
   || ! { command -v chromium || command -v google-chrome; } >/dev/null || ! command -v npm >/dev/null \
   || ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing $packages"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
  else
    echo "missing Debian packages; run: apt-get install $packages" >&2
    exit 1
  fi
fi
# Every suite runs: a browser or npm test fails (never skips) when its tool is missing.
export CI="${CI:-1}"

bash scripts/bootstrap.sh
echo "== ruff"; .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy --strict"; .venv/bin/mypy
for fn in functions/*/main.py; do .venv/bin/mypy --strict --follow-imports=silent "$fn"; done
echo "== deploy linters"; bash scripts/lint-deploy.sh
echo "== secret scan"; .venv/bin/python scripts/scan_secrets.py
echo "== pytest"; .venv/bin/pytest -q -p no:cacheprovider "$@"
