"""The read statements of ``SQLAlchemyRepository``: ``select_statement``, ``count_statement``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select

from underlay.models._statements import REUSABLE
from underlay.query import FilterInput
from underlay.repository._coerce import check_count
from underlay.repository._query import SortKey, parse_order_by
from underlay.repository._writes import WriteMethods
from underlay.typing import ModelT

__all__ = ["SelectMethods"]


class SelectMethods(WriteMethods[ModelT]):
    """Statement builders of ``SQLAlchemyRepository`` (documented there)."""

    def select_statement(
        self,
        *where: Any,
        order_by: Any = None,
        limit: int | None = None,
        offset: int | None = None,
        options: Sequence[Any] = (),
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        search: str | None = None,
    ) -> Select[ModelT]:
        """Build the SELECT that `list_all` sends for the same arguments.

        The repository's scope, ``filter_by`` and ``where`` are all part of it, so the
        statement identifies the query exactly (a cache can key on it).

        Args:
            *where: SQLAlchemy criteria, combined with AND.
            order_by: A caller string such as ``"-created_at,name"`` (declared fields only),
                a SQLAlchemy expression, or a list of either.
            limit: The most rows to return.
            offset: Rows to skip.
            options: Loader options such as ``selectinload(User.posts)``.
            include_deleted: Also return soft-deleted rows.
            filter_by: A caller-supplied filter on declared fields: the mapping form
                (``{"rank__ge": 3}``) or a tree from `underlay.query`.
            search: Text to find in the declared ``search_fields`` (see `search`).

        Returns:
            The ``Select``.

        Raises:
            InvalidQueryError: A caller string names an undeclared field, a ``filter_by``
                value does not fit its column, or ``limit`` / ``offset`` is not an integer
                from 0 to 2**63 - 1.
        """
        if limit is not None:
            limit = check_count(limit, name="limit")
        if offset is not None:
            offset = check_count(offset, name="offset")
        criteria = self._criteria(where, filter_by, include_deleted=include_deleted, search=search)
        keys = parse_order_by(self.model, order_by, self.sortable_fields)
        return self._select(
            criteria, keys, limit=limit, offset=offset, options=options, deleted=include_deleted
        )

    def _select(
        self,
        criteria: list[Any],
        keys: Sequence[SortKey],
        *,
        limit: int | None,
        offset: int | None,
        options: Sequence[Any],
        deleted: bool,
    ) -> Select[ModelT]:
        """`select_statement` with its arguments checked and parsed."""
        statement = select(self.model).where(*criteria)
        if keys:
            statement = statement.order_by(*(key.clause for key in keys))
        if limit is not None:
            statement = statement.limit(limit)
        if offset:
            statement = statement.offset(offset)
        if options:
            statement = statement.options(*options)
        if deleted:
            statement = statement.execution_options(include_deleted=True)
        return statement

    def count_statement(
        self,
        *where: Any,
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        search: str | None = None,
    ) -> Select[int]:
        """Build the ``SELECT count(*)`` that `count` sends for the same arguments."""
        unfiltered = not where and not self.scope and search is None
        if unfiltered and (filter_by is None or self._resolve(filter_by).empty):
            # the count of every row: one statement per class, so SQLAlchemy keys it once
            cls = type(self)
            name = "_count_deleted_too" if include_deleted else "_count_all"
            statement = cls.__dict__.get(name)
            if statement is None:
                statement = self._count_of([], include_deleted=include_deleted)
                statement = statement.execution_options(**{REUSABLE: True})
                setattr(cls, name, statement)
            return statement
        criteria = self._criteria(where, filter_by, include_deleted=include_deleted, search=search)
        return self._count_of(criteria, include_deleted=include_deleted)

    def _count_of(self, criteria: list[Any], *, include_deleted: bool) -> Select[int]:
        statement = select(func.count()).select_from(self.model).where(*criteria)
        if include_deleted:
            statement = statement.execution_options(include_deleted=True)
        return statement
