"""The release path as files: what ships only after CI passed, and a deploy spec that holds no secret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
RELEASES = ("migrate.yml", "deploy-functions.yml", "deploy-edge.yml", "docker.yml", "deploy-digitalocean.yml")
APP_SPEC = ROOT / "deploy" / "digitalocean" / "app.yaml"


def workflow(name: str) -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    loaded["on"] = loaded.pop(True, loaded.get("on"))  # YAML 1.1 reads the key `on` as true
    return loaded


def ancestors(jobs: dict[str, Any], job: str) -> set[str]:
    needs = jobs[job].get("needs", [])
    direct = {needs} if isinstance(needs, str) else set(needs)
    return direct.union(*(ancestors(jobs, n) for n in direct)) if direct else set()


@pytest.mark.parametrize("name", RELEASES)
def test_a_release_never_starts_from_a_push(name: str) -> None:
    """Deploys, image publishing and migrations run when CI calls them, or by hand after CI passed."""
    triggers = set(workflow(name)["on"])
    assert "push" not in triggers
    assert {"workflow_call", "workflow_dispatch"} <= triggers or (name == "docker.yml" and "workflow_call" in triggers)


@pytest.mark.parametrize("name", [n for n in RELEASES if n != "docker.yml"])
def test_a_release_started_by_hand_requires_ci_on_that_commit(name: str) -> None:
    """Every job waits for the gate; a gate that failed or was cancelled stops the whole release."""
    jobs = workflow(name)["jobs"]
    gate = jobs["gate"]
    assert gate["if"] == "github.event_name == 'workflow_dispatch'"
    assert any(step.get("uses", "").startswith("./.github/actions/require-ci") for step in gate["steps"])
    for job, spec in jobs.items():
        if job == "gate":
            continue
        assert "gate" in ancestors(jobs, job), f"{name}: {job} does not wait for the gate"
        needs = spec["needs"] if isinstance(spec["needs"], list) else [spec["needs"]]
        condition = str(spec.get("if", ""))
        if "gate" in needs:
            assert "needs.gate.result == 'success' || needs.gate.result == 'skipped'" in condition, (name, job)
        else:  # runs only when a job it needs (and so, in turn, the gate) succeeded
            assert any(f"needs.{n}.result == 'success'" in condition for n in needs), (name, job)


def test_ci_calls_every_release_only_after_the_tests_passed() -> None:
    ci = workflow("ci.yml")
    jobs = ci["jobs"]
    assert jobs["test"]["strategy"]["matrix"]["python"] == ["3.11", "3.12"]
    # A newer push to main never cancels or replaces a run that may be releasing.
    assert "github.ref == 'refs/heads/main' && github.sha" in ci["concurrency"]["group"]
    assert ci["concurrency"]["cancel-in-progress"] == "${{ github.ref != 'refs/heads/main' }}"
    called = {Path(spec["uses"].split()[0]).name: job for job, spec in jobs.items() if "uses" in spec}
    assert set(called) == set(RELEASES)
    for job in called.values():
        assert "test" in ancestors(jobs, job), job
    assert "migrate" in ancestors(jobs, called["deploy-functions.yml"]), "the SQL functions exist before the code"
    assert "images" in ancestors(jobs, called["deploy-digitalocean.yml"]), "the images exist before the app uses them"
    assert jobs["migrate"]["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert jobs["images"]["with"] == {"publish": True}


def test_images_are_published_only_when_ci_asks() -> None:
    publish = workflow("docker.yml")["jobs"]["publish"]
    assert publish["needs"] == "image", "only an image that passed its smoke test is pushed"
    assert publish["if"].startswith("inputs.publish")


def test_the_app_spec_references_every_secret_and_inlines_none() -> None:
    text = APP_SPEC.read_text()
    spec = yaml.safe_load(text)
    for env in spec["envs"]:
        if env.get("type") == "SECRET":
            assert re.fullmatch(r"\$\{[A-Z_]+\}", env["value"]), env["key"]
    placeholders = set(re.findall(r"\$\{([A-Z_]+)\}", text))
    rendered = (WORKFLOWS / "deploy-digitalocean.yml").read_text()
    names = set(re.search(r'names="([A-Z_ ]+)"', rendered).group(1).split())  # type: ignore[union-attr]
    assert placeholders == names, "every placeholder is filled, and nothing else is substituted"
    secret_keys = {env["key"] for env in spec["envs"] if env.get("type") == "SECRET"}
    assert {"OPENROUTER_API_KEY", "SUPABASE_JWT_SECRET", "DATABASE_URL", "METRICS_TOKEN", "HEALTH_TOKEN"} <= secret_keys
    assert {s["name"] for s in spec["services"]} == {"chat", "completion", "health"}
    assert {s["image"]["tag"] for s in spec["services"]} == {"${IMAGE_TAG}"}, "the commit CI tested, never :latest"
    assert not re.search(r"sk-or-v1-[0-9a-f]|eyJ[A-Za-z0-9_-]{10,}\.", text)
