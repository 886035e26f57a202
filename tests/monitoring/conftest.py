"""The data-plane fixtures (real nginx nodes, sample origins) of tests/edge, for these tests."""

from tests.edge.conftest import Node, make_node, make_origin

__all__ = ["Node", "make_node", "make_origin"]
