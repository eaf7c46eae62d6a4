"""Test helpers for applications built on underlay.

``assert_max_queries`` and ``count_queries`` need nothing beyond the core dependencies.
"""

from underlay.testing._queries import QueryCounter, assert_max_queries, count_queries

__all__ = ["QueryCounter", "assert_max_queries", "count_queries"]
