"""Static checks of the Ansible roles: their documented interface and their handler wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from jinja2 import meta

from cdnctl.edge import nginx_conf

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "defaults" / "main.yml").is_file())


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def tasks_of(role: str) -> list[dict[str, Any]]:
    """Every task of the role, blocks flattened."""
    found: list[dict[str, Any]] = []

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items or []:
            found.append(item)
            for key in ("block", "rescue", "always"):
                walk(item.get(key, []))

    for path in sorted((ROLES_DIR / role / "tasks").glob("*.yml")):
        walk(load(path))
    return found


def test_the_roles_are_found() -> None:
    assert {"openresty", "edge", "shield", "node_exporter", "lab_origin"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_mirror_defaults(role: str) -> None:
    defaults = load(ROLES_DIR / role / "defaults" / "main.yml")
    specs = load(ROLES_DIR / role / "meta" / "argument_specs.yml")
    options = specs["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted(defaults), (
        f"roles/{role}: keys only in defaults/main.yml: {sorted(set(defaults) - set(options))}, "
        f"only in meta/argument_specs.yml: {sorted(set(options) - set(defaults))}"
    )
    drifted = {
        key: {"defaults": value, "argument_specs": options[key].get("default")}
        for key, value in defaults.items()
        if options[key].get("default") != value
    }
    assert not drifted, f"roles/{role}: defaults differ from argument_specs: {drifted}"
    for key, option in options.items():
        assert option.get("description"), f"roles/{role}: {key} has no description"


@pytest.mark.parametrize("role", ROLES)
def test_variables_are_prefixed_with_the_role_name(role: str) -> None:
    defaults = load(ROLES_DIR / role / "defaults" / "main.yml")
    assert all(key.startswith(f"{role}_") for key in defaults), sorted(defaults)


@pytest.mark.parametrize("role", ROLES)
def test_readme_documents_every_variable(role: str) -> None:
    readme = (ROLES_DIR / role / "README.md").read_text(encoding="utf-8")
    missing = [key for key in load(ROLES_DIR / role / "defaults" / "main.yml") if key not in readme]
    assert not missing, f"roles/{role}/README.md does not mention {missing}"


def handler_topics() -> set[str]:
    topics: set[str] = set()
    for path in ROLES_DIR.glob("*/handlers/main.yml"):
        for handler in load(path) or []:
            assert "listen" in handler, f"{path}: handler {handler['name']!r} has no listen topic"
            topics.add(handler["listen"])
    return topics


@pytest.mark.parametrize("role", ROLES)
def test_every_notification_reaches_a_handler_topic(role: str) -> None:
    topics = handler_topics()
    for task in tasks_of(role):
        notify = task.get("notify", [])
        for topic in [notify] if isinstance(notify, str) else notify:
            assert topic in topics, f"roles/{role}: {task['name']!r} notifies unknown {topic!r}"


def configure_task(name: str) -> dict[str, Any]:
    return next(task for task in tasks_of("openresty") if task["name"] == name)


def test_openresty_passes_exactly_what_the_nginx_template_uses() -> None:
    """The role renders templates/nginx/nginx.conf.j2 itself: same variables as render()."""
    source = (nginx_conf.TEMPLATES_DIR / "nginx.conf.j2").read_text(encoding="utf-8")
    env = jinja2.Environment()
    # ansible_managed is Ansible's own variable (the header only Ansible renders)
    top_level = meta.find_undeclared_variables(env.parse(source)) - {"ansible_managed"}
    attributes = set()
    for node in env.parse(source).find_all(jinja2.nodes.Getattr):
        if isinstance(node.node, jinja2.nodes.Name) and node.node.name == "s":
            attributes.add(node.attr)
    task_vars = configure_task("Write nginx.conf (checked with nginx -t)")["vars"]
    assert top_level == set(task_vars), "template variables != the role's template vars"
    assert attributes == set(task_vars["s"]), (
        f"settings the template reads but the role does not pass: "
        f"{sorted(attributes - set(task_vars['s']))}; passed but unused: "
        f"{sorted(set(task_vars['s']) - attributes)}"
    )


def test_openresty_writes_the_settings_document_the_lua_reads(tmp_path: Path) -> None:
    settings = nginx_conf.NodeSettings(prefix=tmp_path, admin_token="x" * 16)
    expected = nginx_conf.lua_settings(settings)
    task = configure_task("Write the settings the Lua code reads at start")
    assert set(task["vars"]["_openresty_lua_settings"]) == set(expected)
