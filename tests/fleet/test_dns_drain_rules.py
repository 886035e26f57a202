"""Drain safety rules and the admin_state file cdnctl writes (no gdnsd needed)."""

from __future__ import annotations

import pytest

from cdnctl.fleet import admin_state, dns, drain
from cdnctl.fleet.drain import Drains

EDGES = {
    "eu-edge-1": ("eu", "192.0.2.10"),
    "eu-edge-2": ("eu", "192.0.2.11"),
    "us-edge-1": ("us", "198.51.100.10"),
}
REGIONS = admin_state.regions_of(EDGES)
LINES = admin_state.drain_lines(EDGES, dns.RESOURCE, dns.SERVICE_TYPE)


def test_an_edge_of_a_region_with_others_may_be_drained() -> None:
    assert admin_state.problems(REGIONS, Drains(edges=frozenset({"eu-edge-1"}))) == []


def test_the_last_edge_of_a_region_is_not_drained_silently() -> None:
    found = admin_state.problems(REGIONS, Drains(edges=frozenset({"us-edge-1"})))
    assert found == [
        "region us would have no edge in DNS: drain the region itself (cdnctl drain us) so "
        "that its clients fail over on purpose"
    ]


def test_a_region_may_be_drained_while_another_serves() -> None:
    assert admin_state.problems(REGIONS, Drains(regions=frozenset({"eu"}))) == []


def test_the_whole_fleet_is_never_drained_silently() -> None:
    everything = Drains(regions=frozenset({"eu", "us"}))
    fleet_empty = "no edge of the fleet would be left in DNS"
    assert admin_state.problems(REGIONS, everything) == [fleet_empty]
    edges = Drains(edges=frozenset({"eu-edge-1", "eu-edge-2"}), regions=frozenset({"us"}))
    assert fleet_empty in admin_state.problems(REGIONS, edges)


def test_targets_are_edges_or_regions_of_the_inventory() -> None:
    assert admin_state.resolve(EDGES, "eu-edge-2") == "edge eu-edge-2"
    assert admin_state.resolve(EDGES, "us") == "region us"
    with pytest.raises(ValueError, match="neither an edge nor a region"):
        admin_state.resolve(EDGES, "mars")


def test_the_inventory_reaches_the_host_as_one_line_per_edge() -> None:
    text = "eu-edge-1=eu=192.0.2.10,eu-edge-2=eu=192.0.2.11,us-edge-1=us=198.51.100.10,"
    assert admin_state.parse_topology(text) == EDGES
    request = admin_state.with_topology(
        {"target": "eu", "drain": True, "resource": "edge", "service_type": "edge_health"},
        EDGES,
    )
    assert request["add"] == ["region eu"] and request["lines"] == LINES


def test_admin_state_round_trip_keeps_an_sres_own_lines() -> None:
    own = "192.0.2.99/* => DOWN # maintenance, ticket 42"
    state = drain.AdminState(Drains(frozenset({"eu-edge-1"}), frozenset({"us"})), (own,))
    text = admin_state.render(state, LINES)
    assert text == (
        f"{own}\n"
        "geoip/edge/us => DOWN # cdnctl drain region us\n"
        "192.0.2.10/edge_health => DOWN # cdnctl drain edge eu-edge-1\n"
    )
    assert admin_state.parse(text) == state


def test_undrain_removes_only_its_target() -> None:
    both = Drains(frozenset({"eu-edge-1", "eu-edge-2"}), frozenset())
    assert drain.change(both, "edge", "eu-edge-1", drain=False) == Drains(
        frozenset({"eu-edge-2"}), frozenset()
    )


def test_an_edit_adds_its_line_and_keeps_an_sres_own() -> None:
    own = "192.0.2.99/* => DOWN # maintenance, ticket 42"
    result = admin_state.edit(f"{own}\n", {"add": ["edge eu-edge-1"], "lines": LINES})
    assert result.text == f"{own}\n192.0.2.10/edge_health => DOWN # cdnctl drain edge eu-edge-1\n"
    assert result.before == Drains() and result.after == Drains(frozenset({"eu-edge-1"}))
    undone = admin_state.edit(result.text, {"remove": ["edge eu-edge-1"], "lines": LINES})
    assert undone.text == f"{own}\n" and undone.after == Drains()


def test_a_checked_edit_that_leaves_a_region_empty_changes_nothing() -> None:
    text = "192.0.2.10/edge_health => DOWN # cdnctl drain edge eu-edge-1\n"
    request = {"add": ["edge eu-edge-2"], "lines": LINES, "regions": REGIONS, "check": True}
    refused = admin_state.edit(text, request)
    assert refused.text == text and refused.after == refused.before
    assert refused.refused == (
        "region eu would have no edge in DNS: drain the region itself (cdnctl drain eu) so "
        "that its clients fail over on purpose",
    )
    forced = admin_state.edit(text, {**request, "check": False})
    assert forced.after.edges == {"eu-edge-1", "eu-edge-2"}


def test_drains_of_edges_gone_from_the_inventory_are_dropped() -> None:
    text = "10.9.9.9/edge_health => DOWN # cdnctl drain edge old-edge\n"
    result = admin_state.edit(text, {"add": ["region us"], "lines": LINES})
    assert result.before.edges == {"old-edge"}
    assert result.text == "geoip/edge/us => DOWN # cdnctl drain region us\n"


def test_the_host_command_carries_the_program_and_the_request_compressed() -> None:
    command = drain.host_command({"target": "eu-edge-1", "drain": True})
    assert command.startswith("python3 -c 'import base64,sys,zlib;exec(")
    assert command.endswith(
        '{{ geodns_state_dir | default("/var/lib/gdnsd") }}/admin_state '
        '{{ geodns_config_dir | default("/etc/gdnsd") }} '
        "{{ geodns_immediate_states | default(true) | bool }}"
    )
    assert "'" not in drain.TOPOLOGY  # it sits in a single-quoted sh -c
    assert len(command) < 10_000
