"""Drain safety rules and the admin_state file cdnctl writes (no gdnsd needed)."""

from __future__ import annotations

import pytest

from cdnctl.fleet import dns, drain
from cdnctl.fleet.drain import Drains

FLEET = dns.Fleet(
    edges=(
        dns.Host("eu-edge-1", "eu", "192.0.2.10"),
        dns.Host("eu-edge-2", "eu", "192.0.2.11"),
        dns.Host("us-edge-1", "us", "198.51.100.10"),
    ),
    dns=(),
)


def test_an_edge_of_a_region_with_others_may_be_drained() -> None:
    assert drain.problems(FLEET, Drains(edges=frozenset({"eu-edge-1"}))) == []


def test_the_last_edge_of_a_region_is_not_drained_silently() -> None:
    found = drain.problems(FLEET, Drains(edges=frozenset({"us-edge-1"})))
    assert found == [
        "region us would have no edge in DNS: drain the region itself (cdnctl drain us) so "
        "that its clients fail over on purpose"
    ]


def test_a_region_may_be_drained_while_another_serves() -> None:
    assert drain.problems(FLEET, Drains(regions=frozenset({"eu"}))) == []


def test_the_whole_fleet_is_never_drained_silently() -> None:
    everything = Drains(regions=frozenset({"eu", "us"}))
    assert drain.problems(FLEET, everything) == ["no edge of the fleet would be left in DNS"]
    edges = Drains(edges=frozenset({"eu-edge-1", "eu-edge-2"}), regions=frozenset({"us"}))
    assert "no edge of the fleet would be left in DNS" in drain.problems(FLEET, edges)


def test_targets_are_edges_or_regions_of_the_inventory() -> None:
    assert drain.resolve_target(FLEET, "eu-edge-2") == ("edge", "eu-edge-2")
    assert drain.resolve_target(FLEET, "us") == ("region", "us")
    with pytest.raises(dns.DnsError, match="neither an edge nor a region"):
        drain.resolve_target(FLEET, "mars")


def test_admin_state_round_trip_keeps_an_sres_own_lines() -> None:
    own = "192.0.2.99/* => DOWN # maintenance, ticket 42"
    state = drain.AdminState(Drains(frozenset({"eu-edge-1"}), frozenset({"us"})), (own,))
    text = drain.render_admin_state(state, FLEET)
    assert text == (
        f"{own}\n"
        "geoip/edge/us => DOWN # cdnctl drain region us\n"
        "192.0.2.10/edge_health => DOWN # cdnctl drain edge eu-edge-1\n"
    )
    assert drain.parse_admin_state(text) == state


def test_undrain_removes_only_its_target() -> None:
    both = Drains(frozenset({"eu-edge-1", "eu-edge-2"}), frozenset())
    assert drain.change(both, "edge", "eu-edge-1", drain=False) == Drains(
        frozenset({"eu-edge-2"}), frozenset()
    )
