"""Test helpers and the pytest plugin for applications built on underlay.

Needs the ``testing`` extra (pytest and pytest-asyncio). Enable the fixtures in your
top-level ``conftest.py``::

    pytest_plugins = ["underlay.testing"]

``underlay_database_url``, ``underlay_db``, ``underlay_session``, ``underlay_cache``,
``underlay_metadata``, ``underlay_migrations`` and ``underlay_empty_database_url`` become
available; ``assert_max_queries`` and ``count_queries`` work in any test.
"""

from underlay._imports import require

require("pytest", extra="testing")
require("pytest_asyncio", extra="testing")

from underlay.testing._events import (  # noqa: E402
    TransactionLog,
    record_transactions,
)
from underlay.testing._plugin import (  # noqa: E402 - after the dependency check
    pytest_addoption as pytest_addoption,
)
from underlay.testing._plugin import (  # noqa: E402
    underlay_cache,
    underlay_database_url,
    underlay_db,
    underlay_empty_database_url,
    underlay_metadata,
    underlay_migrations,
    underlay_session,
)
from underlay.testing._queries import (  # noqa: E402
    QueryCounter,
    assert_max_queries,
    count_queries,
)

__all__ = [
    "QueryCounter",
    "TransactionLog",
    "assert_max_queries",
    "count_queries",
    "record_transactions",
    "underlay_cache",
    "underlay_database_url",
    "underlay_db",
    "underlay_empty_database_url",
    "underlay_metadata",
    "underlay_migrations",
    "underlay_session",
]
