"""`cdnctl plan --base REF`: what a commit would change, from git objects."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from cdnctl.cli.app import app

from ..conftest import tenant_doc


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "t@example.test")
    git(tmp_path, "config", "user.name", "t")
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    for name in ("keep", "change", "drop"):
        (tenants / f"{name}.yaml").write_text(yaml.safe_dump(tenant_doc(name)))
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "base")
    return tmp_path


def run_plan(*args):
    return CliRunner().invoke(app, ["plan", "--cache-dir", ".cache", *args])


def test_plan_lists_added_removed_and_changed_fields(repo):
    tenants = repo / "tenants"
    (tenants / "drop.yaml").unlink()
    (tenants / "fresh.yaml").write_text(yaml.safe_dump(tenant_doc("fresh")))
    changed = tenant_doc("change", cache={"default_ttl": "5m"}, shield=False)
    (tenants / "change.yaml").write_text(yaml.safe_dump(changed))
    result = run_plan("--base", "HEAD", "--format", "json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["added"] == ["fresh"]
    assert plan["removed"] == ["drop"]
    assert plan["unchanged"] == 1
    assert plan["changed"] == {
        "change": [
            {"field": "cache.default_ttl", "before": 3600, "after": 300},
            {"field": "shield", "before": True, "after": False},
        ]
    }
    table = run_plan("--base", "HEAD")
    assert table.exit_code == 0
    assert "cache.default_ttl: 3600 → 300" in table.stdout
    assert "1 to add, 1 to change, 1 to remove, 1 unchanged." in table.stdout


def test_plan_without_changes(repo):
    result = run_plan("--base", "HEAD")
    assert result.exit_code == 0
    assert "No changes against HEAD (3 tenant(s) unchanged)" in result.stdout


def test_plan_refuses_an_invalid_working_tree(repo):
    (repo / "tenants" / "keep.yaml").write_text("id: keep\n")
    result = run_plan("--base", "HEAD")
    assert result.exit_code == 1
    assert "tenants/keep.yaml" in result.stderr


def test_plan_against_an_unknown_ref_is_a_usage_error(repo):
    result = run_plan("--base", "no-such-ref")
    assert result.exit_code == 2
    assert "no-such-ref" in result.stderr


def test_plan_against_a_ref_without_tenants(repo):
    git(repo, "checkout", "-q", "--orphan", "empty")
    git(repo, "rm", "-rqf", "--cached", ".")
    git(repo, "commit", "-q", "--allow-empty", "-m", "empty")
    plan = json.loads(run_plan("--base", "HEAD", "--format", "json").stdout)
    assert plan["added"] == ["change", "drop", "keep"]


def run_validate(*args):
    return CliRunner().invoke(app, ["validate", "--cache-dir", ".cache", "--format", "json", *args])


def conflicts_of(result):
    document = json.loads(result.stdout)
    return [p for p in document["problems"] if "already" in p["reason"]]


@pytest.mark.parametrize(
    ("claim", "why"),
    [
        ("cdn.keep.test", "the same domain"),
        ("*.keep.test", "the wildcard covers cdn.keep.test"),
    ],
)
def test_validate_base_reports_a_conflict_on_the_file_the_change_adds(repo, claim, why):
    """`bad.yaml` sorts before `keep.yaml`: without --base the conflict lands on keep.yaml,
    whose author did nothing wrong."""
    tenants = repo / "tenants"
    (tenants / "bad.yaml").write_text(yaml.safe_dump(tenant_doc("bad", domains=[claim])))
    assert [p["file"] for p in conflicts_of(run_validate())] == ["tenants/keep.yaml"]
    result = run_validate("--base", "HEAD")
    assert result.exit_code == 1
    (problem,) = conflicts_of(result)
    assert problem["file"] == "tenants/bad.yaml"
    assert problem["field"] == "domains[0]"
    assert "tenant 'keep' in tenants/keep.yaml" in problem["reason"]
    assert why in problem["reason"]


def test_validate_base_blames_an_edited_file(repo):
    tenants = repo / "tenants"
    edited = tenant_doc("change", domains=["cdn.change.test", "cdn.keep.test"])
    (tenants / "change.yaml").write_text(yaml.safe_dump(edited))
    assert [p["file"] for p in conflicts_of(run_validate())] == ["tenants/keep.yaml"]
    git(repo, "add", "tenants/change.yaml")  # staged or not, an edit is part of the change
    (problem,) = conflicts_of(run_validate("--base", "HEAD"))
    assert (problem["file"], problem["field"]) == ("tenants/change.yaml", "domains[1]")


def test_validate_base_needs_a_commit(repo):
    result = CliRunner().invoke(app, ["validate", "--base", "no-such-ref"])
    assert result.exit_code == 2
    assert "cannot compare with 'no-such-ref'" in result.stderr
