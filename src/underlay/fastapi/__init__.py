"""FastAPI integration: a session that commits before the response, errors as HTTP problems.

Install with ``pip install 'underlay[fastapi]'``. The pieces:

* `session_dependency` gives each request a session whose commit runs *before* the response
  is sent, so a failed commit (a duplicate, a stale version, a lost connection) becomes an
  error response instead of a 200 for a write that never happened.
* `install` registers exception handlers that turn underlay errors into RFC 9457 problem
  JSON (404, 409, 412, 428, 400 / 422, 503) without leaking SQL or driver text.
* `etag`, `if_match_version` and `require_if_match` connect a versioned model's ``version``
  to ``ETag`` / ``If-Match``.
* `tenant_dependency` runs each request inside `tenant_context` (and `actor_context`).
* `cursor_params` and `page_params` read ``limit`` / ``after`` / ``order_by`` (or
  ``number`` / ``size``) and filters from the query string, checked against a repository's
  declared fields.
"""

from underlay._imports import require

require("fastapi", extra="fastapi")

from underlay.fastapi._etag import etag, if_match_version, require_if_match  # noqa: E402
from underlay.fastapi._params import (  # noqa: E402
    CursorParams,
    PageParams,
    cursor_params,
    page_params,
)
from underlay.fastapi._problems import install, problem_response  # noqa: E402
from underlay.fastapi._session import session_dependency  # noqa: E402
from underlay.fastapi._tenant import tenant_dependency  # noqa: E402

__all__ = [
    "CursorParams",
    "PageParams",
    "cursor_params",
    "etag",
    "if_match_version",
    "install",
    "page_params",
    "problem_response",
    "require_if_match",
    "session_dependency",
    "tenant_dependency",
]
