"""The edge commands run against real edges: the same fixtures as tests/edge."""

from tests.edge.conftest import make_node, make_origin

__all__ = ["make_node", "make_origin"]
