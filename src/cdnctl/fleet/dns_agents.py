"""The drain agents of the DNS hosts, as the controller reaches them.

Each DNS host the geodns role converges runs `admin_state.py serve` (unit cdnctl-dns-admin)
on its private address, port `cdn_dns_admin_port` (9154). A drain then costs one HTTP call
per DNS host, all in parallel: about 10 ms plus gdnsd's own reaction, where an Ansible run
costs 0.7-0.9 s whatever it does (importing Ansible, its inventory and plugins, a fork per
host). The request and the report are the same as Ansible's path (admin_state.Host.handle
runs either way), so drain.py does not care which one carried an edit.

An agent is used when the controller has the admin token ($CDNCTL_ADMIN_TOKEN, what the role
gave the agent: cdn_admin_token), the inventory names the hosts and the edges' addresses
plainly (no Jinja left to render), and the agent answers. A host whose agent cannot be
reached, refuses the token or is too old to know the call gets the edit through Ansible, so
an inventory without agents, or one agent down, still drains: only more slowly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from cdnctl.fleet import admin_state
from cdnctl.fleet.targets import group_hosts, host_url

log = logging.getLogger(__name__)

DEFAULT_PORT = 9154
PORT_VAR = "cdn_dns_admin_port"
PATH = "/admin-state"  # admin_state.AGENT_PATH (that module imports nothing of cdnctl's)
CONNECT_SECONDS = 1.0  # an agent that does not accept within this is taken as absent
# Answers that mean "no agent here that can do it": Ansible does it instead.
FALLBACK_STATUSES = frozenset({401, 404, 405, 501})


@dataclass(frozen=True)
class Agent:
    host: str  # the DNS host's inventory name
    url: str  # http://PRIVATE_ADDRESS:PORT


@dataclass(frozen=True)
class Answer:
    """One agent's answer to an edit request."""

    host: str
    ok: bool  # the agent answered with a report (or with why the request is invalid)
    report: dict[str, Any] | None = None
    error: str = ""
    fallback: bool = False  # no usable agent: the caller uses Ansible for this host


def find(
    listing: Mapping[str, Any], names: Sequence[str], token: str
) -> tuple[list[Agent], dict[str, tuple[str, str]]] | None:
    """The agents of the DNS hosts `names` and the inventory's edges (name -> (region,
    address)) from an `ansible-inventory --list` document; None when the agents cannot be
    used: no token, or an edge whose region or address is missing or still a template (the
    Ansible path renders those, and names what is missing)."""
    if not token or not names:
        return None
    hostvars = listing.get("_meta", {}).get("hostvars", {})
    edges: dict[str, tuple[str, str]] = {}
    for name in group_hosts(listing, "edge"):
        values = [hostvars.get(name, {}).get(key) for key in ("cdn_region", "cdn_public_address")]
        if any(value is None or "{{" in str(value) for value in values):
            return None
        edges[name] = (str(values[0]), str(values[1]))
    agents = []
    for name in names:
        hv = hostvars.get(name, {})
        port = hv.get(PORT_VAR, DEFAULT_PORT)
        if "{{" in f"{port}{hv.get('cdn_private_address', '')}{hv.get('ansible_host', '')}":
            return None
        agents.append(Agent(name, host_url(name, hv, port)))
    return agents, edges


def post(
    agents: Sequence[Agent],
    edges: Mapping[str, tuple[str, str]],
    token: str,
    request: Mapping[str, Any],
    timeout: float,
) -> list[Answer]:
    """`request` to every agent in parallel (`timeout`: seconds an agent may take, its wait
    for gdnsd included)."""
    body = json.dumps({"request": dict(request), "edges": dict(edges)}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Timeout(timeout, connect=CONNECT_SECONDS)
    with httpx.Client(headers=headers, timeout=limits) as client:

        def one(agent: Agent) -> Answer:
            return _answer(agent, client, body)

        with ThreadPoolExecutor(max_workers=max(1, len(agents))) as pool:
            return list(pool.map(one, agents))


def _answer(agent: Agent, client: httpx.Client, body: bytes) -> Answer:
    try:
        response = client.post(f"{agent.url}{PATH}", content=body)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        log.info("%s: no drain agent at %s (%s): using Ansible", agent.host, agent.url, exc)
        return Answer(agent.host, False, error=f"{type(exc).__name__}: {exc}", fallback=True)
    except httpx.HTTPError as exc:  # it may have written: report, do not edit again
        return Answer(
            agent.host, False, error=f"drain agent {agent.url}: {type(exc).__name__}: {exc}"
        )
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code in FALLBACK_STATUSES:
        reason = answer.get("error") if isinstance(answer, dict) else response.reason_phrase
        log.warning(
            "%s: drain agent %s answered HTTP %d (%s): using Ansible",
            agent.host,
            agent.url,
            response.status_code,
            reason,
        )
        return Answer(agent.host, False, error=f"HTTP {response.status_code}", fallback=True)
    if not isinstance(answer, dict) or (response.status_code != 200 and "error" not in answer):
        return Answer(
            agent.host,
            False,
            error=f"drain agent {agent.url}: HTTP {response.status_code}: {response.text[:200]}",
        )
    return Answer(agent.host, True, report=answer)  # 400: {"error"} names what is invalid


def serve_command(
    listen: str, token_file: str, state_file: str, config_dir: str, *, timers: bool = False
) -> list[str]:
    """An agent's command line as the geodns role's unit runs it (its ExecStart: the system
    python3 on admin_state.py), for the tests and benchmarks that start one."""
    return [
        "/usr/bin/python3", admin_state.__file__, "serve",
        "--listen", listen, "--token-file", token_file,
        "--state-file", state_file, "--config-dir", config_dir,
    ] + (["--timers"] if timers else [])  # fmt: skip
