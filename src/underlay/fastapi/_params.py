"""Query-parameter dependencies for ``paginate`` and ``page``, checked against a repository.

No ``from __future__ import annotations`` here: FastAPI reads the dependencies' annotations
at runtime, and they refer to local variables.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError

from underlay.exceptions import InvalidQueryError
from underlay.fastapi._pages import CursorParams, PageParams
from underlay.repository._query import parse_order_by
from underlay.repository._sqlalchemy import SQLAlchemyRepository

__all__ = ["CursorParams", "PageParams", "cursor_params", "page_params"]

_LIST_OPERATORS = ("__in", "__not_in", "__between")


def _invalid(name: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", name), "msg": message, "type": "value_error"}])


def _check_order_by(repository: type[SQLAlchemyRepository[Any]], order_by: str | None) -> None:
    if order_by is None:
        return
    try:
        parse_order_by(repository.model, order_by, repository.sortable_fields)
    except InvalidQueryError as exc:
        raise _invalid("order_by", str(exc)) from exc


def _filters(
    repository: type[SQLAlchemyRepository[Any]], request: Request, reserved: frozenset[str]
) -> dict[str, Any]:
    allowed = set(repository.filterable_fields)
    filters: dict[str, Any] = {}
    for name in request.query_params:
        if name in reserved or name in filters:
            continue
        if name not in allowed and name.partition("__")[0] not in allowed:
            raise _invalid(
                name,
                f"{name!r} is not a filter of this collection; "
                f"filterable fields: {', '.join(sorted(allowed)) or 'none'}.",
            )
        values = request.query_params.getlist(name)
        filters[name] = values if len(values) > 1 or name.endswith(_LIST_OPERATORS) else values[0]
    return filters


def cursor_params(
    repository: type[SQLAlchemyRepository[Any]],
    *,
    default_limit: int = 50,
    default_order_by: str | None = None,
) -> Callable[..., Awaitable[CursorParams]]:
    """Return a dependency reading ``limit``, ``after``, ``order_by`` and filters.

    ``order_by`` may name only the repository's ``sortable_fields`` and ``limit`` must lie
    between 1 and its ``max_page_size``; other query parameters become ``filter_by`` and
    may name only its ``filterable_fields`` (``field`` or ``field__op``; repeat a parameter
    for a list). A violation answers 422 naming the parameter. The cursor itself and the
    filter values are checked by ``paginate`` (a bad one answers 400 with `install`).

    Args:
        repository: The repository class whose declarations apply.
        default_limit: ``limit`` when the query string has none.
        default_order_by: ``order_by`` when the query string has none.

    Returns:
        An async dependency producing `CursorParams`; use
        ``Annotated[CursorParams, Depends(cursor_params(ArticleRepository))]``.
    """
    reserved = frozenset({"limit", "after", "order_by"})
    maximum = repository.max_page_size

    async def underlay_cursor_params(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=maximum)] = default_limit,
        after: Annotated[str | None, Query(max_length=8192)] = None,
        order_by: Annotated[str | None, Query(max_length=512)] = default_order_by,
    ) -> CursorParams:
        _check_order_by(repository, order_by)
        return CursorParams(
            limit=limit,
            after=after,
            order_by=order_by,
            filter_by=_filters(repository, request, reserved),
        )

    return underlay_cursor_params


def page_params(
    repository: type[SQLAlchemyRepository[Any]],
    *,
    default_size: int = 50,
    default_order_by: str | None = None,
) -> Callable[..., Awaitable[PageParams]]:
    """Return a dependency reading ``number``, ``size``, ``order_by`` and filters.

    Checked like `cursor_params`: ``size`` between 1 and the repository's
    ``max_page_size``, ``number`` from 1, ``order_by`` and filters against its declared
    fields; a violation answers 422 naming the parameter.

    Args:
        repository: The repository class whose declarations apply.
        default_size: ``size`` when the query string has none.
        default_order_by: ``order_by`` when the query string has none.

    Returns:
        An async dependency producing `PageParams`.
    """
    reserved = frozenset({"number", "size", "order_by"})
    maximum = repository.max_page_size

    async def underlay_page_params(
        request: Request,
        number: Annotated[int, Query(ge=1, le=10_000_000)] = 1,
        size: Annotated[int, Query(ge=1, le=maximum)] = default_size,
        order_by: Annotated[str | None, Query(max_length=512)] = default_order_by,
    ) -> PageParams:
        _check_order_by(repository, order_by)
        return PageParams(
            number=number,
            size=size,
            order_by=order_by,
            filter_by=_filters(repository, request, reserved),
        )

    return underlay_page_params
