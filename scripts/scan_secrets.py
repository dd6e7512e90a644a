"""Secret scanning: fail when a tracked file holds a secret that .secrets.baseline does not list as audited.

Run by scripts/test.sh (so by CI) and by the pre-commit hook (.pre-commit-config.yaml). Uses Yelp's
detect-secrets (dev extras): its plugins catch high-entropy strings (an OpenRouter key's 64 hex digits),
JWTs (a Supabase service-role key), private keys, cloud credentials and `password = ...` assignments.
Lock files and the baseline itself are skipped: their hashes are high-entropy by design.

A finding that is not a secret (a test fixture, the offline mode's fixed key) is audited once:
``.venv/bin/detect-secrets scan --baseline .secrets.baseline`` adds it, then
``.venv/bin/detect-secrets audit .secrets.baseline`` labels it. A real secret is removed from the file
and rotated: it is in the git history already.

Usage: python scripts/scan_secrets.py [REPO]   (exit 1 and a list when something unaudited is found)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EXCLUDE = r"(^|/)(package-lock\.json|requirements\.lock|\.secrets\.baseline)$"


def unaudited(repo: Path) -> list[str]:
    """``file:line: type`` of every finding in ``repo``'s tracked files that the baseline has not cleared."""
    scanner = Path(sys.executable).with_name("detect-secrets")
    with tempfile.TemporaryDirectory() as work:
        baseline = Path(work) / "baseline.json"
        shutil.copy(repo / ".secrets.baseline", baseline)
        subprocess.run(  # noqa: S603 - the venv's own scanner, fixed arguments
            [str(scanner), "scan", "--baseline", str(baseline), "--exclude-files", EXCLUDE],
            cwd=repo,
            check=True,
            timeout=300,
        )
        results: dict[str, list[dict[str, object]]] = json.loads(baseline.read_text())["results"]
    return [
        f"{path}:{finding.get('line_number')}: {finding.get('type')}"
        for path, findings in sorted(results.items())
        for finding in findings
        if finding.get("is_secret") is not False
    ]


def main() -> int:
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    found = unaudited(repo)
    for line in found:
        print(f"possible secret: {line}", file=sys.stderr)
    if found:
        print(
            "secret scan: FAILED. Remove real secrets (and rotate them); audit false positives into "
            ".secrets.baseline (see scripts/scan_secrets.py).",
            file=sys.stderr,
        )
        return 1
    print("secret scan: no unaudited secrets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
