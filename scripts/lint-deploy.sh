#!/usr/bin/env bash
# Lint the deploy and operate artifacts; exits non-zero on any finding.
#   actionlint + zizmor   .github/workflows (shellcheck checks their run: scripts through actionlint)
#   hadolint              deploy/Dockerfile
#   promtool              deploy/prometheus/alerts.yml (check) and alerts.test.yml (unit tests)
# The Python tools come from the dev extras in .venv; promtool from the Debian/Ubuntu `prometheus` package.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prefer the project's virtualenv (actionlint finds shellcheck on PATH there too).
if [ -d .venv/bin ]; then
  PATH="$PWD/.venv/bin:$PATH"
fi

missing=()
for tool in actionlint shellcheck zizmor hadolint promtool; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "lint-deploy: missing ${missing[*]} (pip: the project's dev extras; promtool: apt-get install prometheus)" >&2
  exit 1
fi

status=0
run() {
  echo "== $*"
  "$@" || status=1
}

run shellcheck scripts/lint-deploy.sh
run actionlint -no-color .github/workflows/*.yml
# --offline: no GitHub API calls (CI and sandboxes have no network to GitHub); pins are checked by the
# unpinned-uses audit, which works offline. --persona=pedantic would also report style-level smells.
run zizmor --offline --no-progress --color=never .github/workflows
run hadolint --no-color deploy/Dockerfile
run promtool check rules deploy/prometheus/alerts.yml
run promtool test rules deploy/prometheus/alerts.test.yml
# The Supabase Edge front door (supabase/functions, TypeScript): types, lint, format (tests: tests/edge).
# Deno comes from the dev extras (PyPI `deno`); no dependencies, so all of it works offline.
if command -v deno >/dev/null; then
  export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
  run deno check --quiet supabase/functions
  run deno lint --quiet supabase/functions
  run deno fmt --check --quiet --line-width=120 supabase/functions
else
  echo "lint-deploy: missing deno (pip: the project's dev extras)" >&2
  status=1
fi

if [ "$status" -ne 0 ]; then
  echo "lint-deploy: FAILED" >&2
fi
exit "$status"
