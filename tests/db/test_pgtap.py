"""Every pgTAP file in supabase/tests/database passes against our migrations (as `supabase test db` runs them)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pgcluster import ROOT, PgCluster

PGTAP_FILES = sorted((ROOT / "supabase" / "tests" / "database").glob("*.test.sql"))


@pytest.fixture(scope="module")
def pgtap(pg: PgCluster) -> PgCluster:
    if not pg.psql("select 1 from pg_available_extensions where name = 'pgtap'").strip():
        if os.environ.get("CI"):
            pytest.fail("the pgtap extension is not installed (apt-get install postgresql-15-pgtap)")
        pytest.skip("the pgtap extension is not installed (apt-get install postgresql-15-pgtap)")
    return pg


def tap_failures(output: str) -> list[str]:
    """What is wrong with a TAP stream: failed tests, a missing plan, or a count that differs from the plan."""
    plans = re.findall(r"^1\.\.(\d+)", output, flags=re.M)
    results = re.findall(r"^(not ok|ok) (\d+)(.*)$", output, flags=re.M)
    problems = [f"not ok {number}{rest}" for verdict, number, rest in results if verdict == "not ok"]
    if len(plans) != 1:
        problems.append(f"expected one plan line, found {len(plans)}")
    elif int(plans[0]) != len(results):
        problems.append(f"planned {plans[0]} tests but ran {len(results)}")
    return problems


def run_file(pg: PgCluster, path: Path) -> tuple[bool, str]:
    """Run one file with pg_prove when installed (what `supabase test db` uses), else psql plus our TAP check."""
    pg_prove = shutil.which("pg_prove")
    if pg_prove:
        argv = [pg_prove, "--verbose", "--psql-bin", str(pg.bindir / "psql"), "--dbname", pg.dsn, str(path)]
    else:
        argv = [str(pg.bindir / "psql"), "--no-psqlrc", "--quiet", "--tuples-only", "--no-align"]
        argv += ["--set=ON_ERROR_STOP=1", "--dbname", pg.dsn, "--file", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=pg.env(), check=False)
    output = result.stdout + result.stderr
    problems = tap_failures(result.stdout)
    passed = result.returncode == 0 and not problems
    return passed, output + "".join(f"\n# {problem}" for problem in problems)


@pytest.mark.parametrize("path", PGTAP_FILES, ids=[path.name for path in PGTAP_FILES])
def test_pgtap_file_passes(pgtap: PgCluster, path: Path) -> None:
    passed, output = run_file(pgtap, path)
    assert passed, f"{path.relative_to(ROOT)} failed:\n{output}"


def test_there_are_pgtap_files() -> None:
    assert PGTAP_FILES, "no supabase/tests/database/*.test.sql found"


@pytest.mark.parametrize(
    ("output", "problems"),
    [
        ("1..2\nok 1 - a\nok 2 - b\n", []),
        ("1..2\nok 1 - a\nnot ok 2 - b\n", ["not ok 2 - b"]),
        ("1..3\nok 1 - a\nok 2 - b\n", ["planned 3 tests but ran 2"]),
        ("ok 1 - a\n", ["expected one plan line, found 0"]),
    ],
)
def test_tap_check_catches_failures_and_plan_mismatches(output: str, problems: list[str]) -> None:
    assert tap_failures(output) == problems
