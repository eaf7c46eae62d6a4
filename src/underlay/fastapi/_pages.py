"""The parameter objects the pagination dependencies produce."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CursorParams", "PageParams"]


@dataclass(frozen=True)
class CursorParams:
    """The keyset-pagination parameters of one request.

    ``limit`` is the number of rows per page, ``after`` the cursor of the previous page (or
    ``None``), ``order_by`` the sort order string (or ``None`` for the repository's default)
    and ``filter_by`` the filters from the remaining query parameters. Pass them on with
    ``repository.paginate(**params.as_kwargs())``.
    """

    limit: int
    after: str | None
    order_by: str | None
    filter_by: dict[str, Any]

    def as_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments for ``repository.paginate(**params.as_kwargs())``."""
        return {
            "limit": self.limit,
            "after": self.after,
            "order_by": self.order_by,
            "filter_by": self.filter_by or None,
        }


@dataclass(frozen=True)
class PageParams:
    """The offset-pagination parameters of one request.

    ``number`` is the 1-based page number, ``size`` the number of rows per page,
    ``order_by`` the sort order string (or ``None`` for the primary key) and ``filter_by``
    the filters from the remaining query parameters. Pass them on with
    ``repository.page(**params.as_kwargs())``.
    """

    number: int
    size: int
    order_by: str | None
    filter_by: dict[str, Any]

    def as_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments for ``repository.page(**params.as_kwargs())``."""
        return {
            "number": self.number,
            "size": self.size,
            "order_by": self.order_by,
            "filter_by": self.filter_by or None,
        }
