"""``SQLAlchemyRepository``: the async repository over one mapped class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, overload

from sqlalchemy import select

from underlay.exceptions import (
    InvalidQueryError,
    MultipleResultsError,
    NotFoundError,
)
from underlay.models import SoftDeleteMixin
from underlay.query import FilterInput
from underlay.repository import _pagination as pagination
from underlay.repository._coerce import MAX_BIGINT, canonical_identity, check_count
from underlay.repository._get import get_by_identity
from underlay.repository._query import (
    SortKey,
    column_map,
    parse_order_by,
)
from underlay.repository._select import SelectMethods
from underlay.repository._stream import (
    DEFAULT_STREAM_BATCH,
    Stream,
    check_batch_size,
    stream_batches,
)
from underlay.typing import ModelT, SchemaT

__all__ = ["SQLAlchemyRepository"]


class SQLAlchemyRepository(SelectMethods[ModelT]):
    """An async repository for one mapped class, over an ``AsyncSession``.

    Subclass it with the model as the generic parameter (or set ``model``); construct it
    with a session per unit of work. Reads accept SQLAlchemy criteria and loader options;
    strings from callers (``order_by="-created_at"``, ``filter_by={...}``) may only name the
    fields the class declares in ``sortable_fields`` / ``filterable_fields``.

    Args:
        session: The session to work in. The repository never commits: the caller owns the
            transaction.
        where: Criteria applied to every read and write of this repository instance (a
            base scope, for example a tenant). Inserts are not checked against it.

    Attributes:
        model: The mapped class.
        session: The session the repository works in.
        scope: The ``where`` criteria given at construction.
        sortable_fields: Fields a caller-supplied ``order_by`` string may name.
        filterable_fields: Fields a caller-supplied ``filter_by`` may name.
        max_page_size: The largest ``limit`` / ``size`` pagination accepts.
        cursor_secret: Key signing this repository's cursors; ``None`` uses
            :func:`underlay.repository.set_cursor_secret` or ``UNDERLAY_CURSOR_SECRET``.

    Example:
        >>> import asyncio
        >>> from sqlalchemy import Column, Integer, String
        >>> from sqlalchemy.orm import DeclarativeBase
        >>> from underlay import Database
        >>> class DocBase(DeclarativeBase): ...
        >>> class Tag(DocBase):
        ...     __tablename__ = "doc_tags"
        ...     id = Column(Integer, primary_key=True)
        ...     name = Column(String(50), unique=True, nullable=False)
        >>> class TagRepository(SQLAlchemyRepository[Tag]):
        ...     sortable_fields = ("name",)
        >>> async def main() -> list[str]:
        ...     async with Database("sqlite+aiosqlite:///:memory:") as db:
        ...         await db.create_all(DocBase.metadata)
        ...         async with db.session() as session:
        ...             tags = TagRepository(session)
        ...             await tags.insert_many([{"name": "b"}, {"name": "a"}])
        ...             await tags.upsert({"name": "c"}, conflict_on=["name"])
        ...             return [tag.name for tag in await tags.list_all(order_by="-name")]
        >>> asyncio.run(main())
        ['c', 'b', 'a']
    """

    # -- reads ----------------------------------------------------------------------------

    async def get(
        self,
        id: Any,
        *,
        options: Sequence[Any] = (),
        for_update: bool = False,
        include_deleted: bool = False,
    ) -> ModelT | None:
        """Return the entity with primary key ``id``, or ``None``.

        An entity already in the session is returned without SQL (unless ``for_update``).
        A soft-deleted one is not returned, even from the session, unless ``include_deleted``.

        Args:
            id: The primary key (a tuple for a composite key).
            options: Loader options such as ``selectinload(User.posts)``.
            for_update: Lock the row (``SELECT ... FOR UPDATE``) where the backend can.
            include_deleted: Also return a soft-deleted row.

        Returns:
            The entity or ``None``.

        Raises:
            InvalidQueryError: ``id`` does not fit the primary key's types (no SQL is sent).
        """
        ident = canonical_identity(self._mapper, id)
        options = self._options("get", options)
        with self._translated(id):
            if self.scope:
                statement = self.select_statement(
                    *self._id_criteria(ident), options=options, include_deleted=include_deleted
                )
                if for_update:
                    statement = statement.with_for_update()
                result = await self.session.execute(statement)
                entity = result.unique().scalars().one_or_none()
            elif not (options or for_update or include_deleted):
                entity = await get_by_identity(self.session, self._mapper, ident)
            else:
                entity = await self.session.get(
                    self.model,
                    ident,
                    options=options,
                    with_for_update=True if for_update else None,
                    execution_options={"include_deleted": True} if include_deleted else {},
                )
        if (
            entity is not None
            and not include_deleted
            and isinstance(entity, SoftDeleteMixin)
            and entity.deleted_at is not None
        ):
            return None
        return entity

    async def get_one(
        self,
        id: Any,
        *,
        options: Sequence[Any] = (),
        for_update: bool = False,
        include_deleted: bool = False,
    ) -> ModelT:
        """Return the entity with primary key ``id``; like :meth:`get` but never ``None``.

        Raises:
            NotFoundError: No such (live) row.
        """
        entity = await self.get(
            id, options=options, for_update=for_update, include_deleted=include_deleted
        )
        if entity is None:
            raise NotFoundError(model=self.model, id=self._canonical_id(id))
        return entity

    async def one_or_none(
        self,
        *where: Any,
        options: Sequence[Any] = (),
        include_deleted: bool = False,
        filter_by: FilterInput = None,
    ) -> ModelT | None:
        """Return the one entity matching the criteria, or ``None``.

        Raises:
            MultipleResultsError: More than one row matches.
        """
        statement = self.select_statement(
            *where,
            limit=2,
            options=self._options("one_or_none", options),
            include_deleted=include_deleted,
            filter_by=filter_by,
        )
        with self._translated():
            rows = (await self.session.execute(statement)).unique().scalars().all()
        if len(rows) > 1:
            raise MultipleResultsError(model=self.model)
        return rows[0] if rows else None

    async def list_all(
        self,
        *where: Any,
        order_by: Any = None,
        limit: int | None = None,
        offset: int | None = None,
        options: Sequence[Any] = (),
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        search: str | None = None,
    ) -> list[ModelT]:
        """Return the entities matching the criteria; arguments as :meth:`select_statement`."""
        statement = self.select_statement(
            *where,
            order_by=order_by,
            limit=limit,
            offset=offset,
            options=self._options("list_all", options),
            include_deleted=include_deleted,
            filter_by=filter_by,
            search=search,
        )
        with self._translated():
            return list((await self.session.execute(statement)).unique().scalars().all())

    async def count(
        self,
        *where: Any,
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        search: str | None = None,
    ) -> int:
        """Return how many rows match the criteria."""
        statement = self.count_statement(
            *where, include_deleted=include_deleted, filter_by=filter_by, search=search
        )
        with self._translated():
            return int((await self.session.execute(statement)).scalar_one())

    async def exists(
        self,
        *where: Any,
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        search: str | None = None,
    ) -> bool:
        """Return whether any row matches the criteria (reads at most one key)."""
        key = next(iter(self._mapper.primary_key))
        criteria = self._criteria(where, filter_by, include_deleted=include_deleted, search=search)
        statement = select(key).where(*criteria).limit(1)
        statement = statement.select_from(self.model)
        if include_deleted:
            statement = statement.execution_options(include_deleted=True)
        with self._translated():
            return (await self.session.execute(statement)).first() is not None

    async def search(
        self,
        text: str,
        *where: Any,
        limit: int = 50,
        offset: int | None = None,
        options: Sequence[Any] = (),
        include_deleted: bool = False,
        filter_by: FilterInput = None,
    ) -> list[ModelT]:
        """Return the entities matching ``text`` in ``search_fields``, best match first.

        The repository declares how it searches: ``search_mode = "ilike"`` (the default:
        every word must appear in one of the fields, case-insensitively, taken literally;
        ranked by how many fields and words match) or ``"fulltext"``: PostgreSQL matches
        ``websearch_to_tsquery(search_config, text)`` against ``search_vector`` (a
        ``tsvector`` column) or a vector computed from the fields, ranked by ``ts_rank``;
        SQLite matches the words in the FTS5 table ``search_fts_table`` (default
        ``<table>_fts``, ``rowid`` = the primary key), ranked by its ``rank``. Ties keep
        primary-key order.

        Args:
            text: The caller's search text.
            *where: SQLAlchemy criteria.
            limit: The most rows to return, 1 to ``max_page_size``.
            offset: Rows to skip.
            options: Loader options.
            include_deleted: Also return soft-deleted rows.
            filter_by: A caller-supplied filter, as for `list_all`.

        Returns:
            The matching entities, ranked; none for text without words.

        Raises:
            InvalidQueryError: No ``search_fields`` declared, or bad text or arguments.
        """
        self._check_size(limit, "limit")
        found = self._search(text)
        if found is None:
            return []
        statement = self.select_statement(
            *where,
            found[0],
            order_by=[found[1], *self._mapper.primary_key],
            limit=limit,
            offset=offset,
            options=self._options("search", options),
            include_deleted=include_deleted,
            filter_by=filter_by,
        )
        with self._translated():
            return list((await self.session.execute(statement)).unique().scalars().all())

    @overload
    def stream(
        self,
        *where: Any,
        order_by: Any = None,
        batch_size: int = DEFAULT_STREAM_BATCH,
        options: Sequence[Any] = (),
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        schema: None = None,
    ) -> Stream[ModelT]: ...

    @overload
    def stream(
        self,
        *where: Any,
        order_by: Any = None,
        batch_size: int = DEFAULT_STREAM_BATCH,
        options: Sequence[Any] = (),
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        schema: type[SchemaT],
    ) -> Stream[SchemaT]: ...

    def stream(
        self,
        *where: Any,
        order_by: Any = None,
        batch_size: int = DEFAULT_STREAM_BATCH,
        options: Sequence[Any] = (),
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        schema: type[SchemaT] | None = None,
    ) -> Stream[ModelT] | Stream[SchemaT]:
        """Read every matching row in batches, holding one batch at a time (exports).

        PostgreSQL reads through one server-side cursor; SQLite runs one keyset query per
        batch (each starts after the previous batch's last row), so no cursor stays open
        between batches. Soft-deleted rows, other tenants' rows and the repository's scope
        are left out as for `list_all`. Rows come in ``order_by`` order with the primary
        key as the tie-breaker (sort columns must be NOT NULL).

        Use it as ``async with repo.stream(...) as batches: async for batch in batches``,
        so that leaving the loop early closes the cursor at once. The session must stay
        open while the stream is read. In a read-only session without a snapshot
        (``db.session(readonly=True)``) the SQLite batches are separate statements and
        may see commits made between them; use ``snapshot=True`` (or a read-write
        session) for one consistent view.

        Args:
            *where: SQLAlchemy criteria.
            order_by: As for `paginate`; defaults to the primary key.
            batch_size: Rows per batch, 1 to 1,000,000.
            options: Loader options (``selectinload`` works per batch; joined loads of
                collections do not, as rows of one entity may straddle two batches).
            include_deleted: Also return soft-deleted rows.
            filter_by: A caller-supplied filter on declared fields, as for `list_all`.
            schema: A Pydantic model: yield schemas validated from the entities instead.

        Returns:
            A `Stream` of lists of entities (or of ``schema`` instances).

        Raises:
            InvalidQueryError: Bad sort or filter fields or a bad ``batch_size``, raised
                here, before any SQL.

        Example:
            >>> async def export(repo: SQLAlchemyRepository[Any]) -> int:
            ...     rows = 0
            ...     async with repo.stream(batch_size=500) as batches:
            ...         async for batch in batches:
            ...             rows += len(batch)
            ...     return rows
        """
        size = check_batch_size(batch_size)
        resolved = self._resolve(filter_by)
        self._keyset_keys(order_by)  # refuse bad sort fields now, not at the first batch
        convert = None
        if schema is not None:
            target = schema

            def convert(entity: Any) -> Any:
                return target.model_validate(entity, from_attributes=True)

        return Stream(
            stream_batches(
                self,
                where,
                order_by=order_by,
                batch_size=size,
                options=self._options("stream", options),
                include_deleted=include_deleted,
                filter_by=resolved,
                convert=convert,
            )
        )

    # -- pagination -----------------------------------------------------------------------

    def _keyset_keys(self, order_by: Any) -> list[SortKey]:
        keys = parse_order_by(self.model, order_by, self.sortable_fields)
        columns = column_map(self.model)
        for key in keys:
            if key.name is None:
                raise InvalidQueryError(
                    "paginate sorts on mapped columns only; use a column attribute or a "
                    "declared field name."
                )
            if columns[key.name].nullable:
                raise InvalidQueryError(
                    f"Cannot paginate over nullable column {key.name!r}: keyset pagination "
                    "needs NOT NULL sort columns."
                )
        named = {key.name for key in keys}
        for prop_column in self._mapper.primary_key:
            name = next(k for k, c in columns.items() if c is prop_column)
            if name not in named:
                keys.append(SortKey(columns[name], descending=False, name=name))
        return keys

    def _check_size(self, size: Any, name: str) -> int:
        return check_count(size, name=name, minimum=1, maximum=self.max_page_size)

    async def paginate(
        self,
        *where: Any,
        order_by: Any = None,
        limit: int = 50,
        after: str | None = None,
        options: Sequence[Any] = (),
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        search: str | None = None,
    ) -> pagination.CursorPage[ModelT]:
        """Return one page of a keyset (cursor) pagination.

        Rows are ordered by ``order_by`` with the primary key appended as a tie-breaker, and
        the next page starts strictly after the last row of this one, so each page costs the
        same however deep it is, and rows inserted meanwhile never shift the pages. Sort
        columns must be NOT NULL.

        Args:
            *where: SQLAlchemy criteria.
            order_by: As for :meth:`select_statement`; mapped columns only. Defaults to
                the primary key.
            limit: Rows per page, 1 to ``max_page_size``.
            after: ``next_cursor`` of the previous page; ``None`` for the first page.
            options: Loader options.
            include_deleted: Also return soft-deleted rows.
            filter_by: A caller-supplied filter on declared fields: the mapping form
                (``{"rank__ge": 3}``) or a tree from `underlay.query`.
            search: Text to find in the declared ``search_fields`` (see `search`).

        Returns:
            A :class:`CursorPage`.

        Raises:
            InvalidQueryError: Bad sort or filter fields, a bad ``limit``, or a cursor that
                was tampered with, minted elsewhere, or for another ``order_by``.
        """
        limit = self._check_size(limit, "limit")
        resolved = self._resolve(filter_by)
        keys = self._keyset_keys(order_by)
        spec = [key.spec for key in keys]
        secret = pagination.resolve_secret(self.cursor_secret)
        table = self._mapper.local_table.fullname  # type: ignore[attr-defined]  # a Table
        criteria = self._criteria(where, resolved, include_deleted=include_deleted, search=search)
        if after is not None:
            values = pagination.decode_cursor(
                secret, after, table=table, spec=spec, filters=self._fingerprint(resolved, search)
            )
            pagination.check_cursor_values(keys, values)
            criteria.append(pagination.keyset_predicate(keys, values))
        statement = self._select(
            criteria,
            keys,
            limit=limit + 1,
            offset=None,
            options=self._options("paginate", options),
            deleted=include_deleted,
        )
        with self._translated():
            rows = list((await self.session.execute(statement)).unique().scalars().all())
        has_more = len(rows) > limit
        items = rows[:limit]
        cursor = None
        if has_more:
            last = items[-1]
            cursor = pagination.encode_cursor(
                secret,
                table=table,
                spec=spec,
                values=[getattr(last, key.name or "") for key in keys],
                filters=self._fingerprint(resolved, search),
            )
        return pagination.CursorPage(items=items, next_cursor=cursor, has_more=has_more)

    async def page(
        self,
        *where: Any,
        order_by: Any = None,
        number: int = 1,
        size: int = 50,
        count: Literal["exact", "none"] = "exact",
        options: Sequence[Any] = (),
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        search: str | None = None,
    ) -> pagination.Page[ModelT]:
        """Return page ``number`` of ``size`` rows (offset pagination).

        Without ``order_by`` rows are ordered by primary key, so pages are stable. Deep
        pages cost more (the database skips ``offset`` rows): prefer :meth:`paginate` for
        feeds and exports.

        Args:
            *where: SQLAlchemy criteria.
            order_by: As for :meth:`select_statement`.
            number: The 1-based page number.
            size: Rows per page, 1 to ``max_page_size``.
            count: ``"exact"`` fills ``total``: on the last page (fewer than ``size``
                rows, or none on page 1) from the page itself, otherwise with a separate
                ``count(*)``. ``"none"`` skips it (``total`` is ``None``).
            options: Loader options.
            include_deleted: Also return soft-deleted rows.
            filter_by: A caller-supplied filter on declared fields: the mapping form
                (``{"rank__ge": 3}``) or a tree from `underlay.query`.
            search: Text to find in the declared ``search_fields`` (see `search`).

        Returns:
            A :class:`Page`.

        Raises:
            InvalidQueryError: Bad arguments, sort or filter fields.
        """
        size = self._check_size(size, "size")
        # the offset, (number - 1) * size, must fit a BIGINT
        number = check_count(number, name="number", minimum=1, maximum=MAX_BIGINT // size)
        if not isinstance(count, str) or count not in ("exact", "none"):
            raise InvalidQueryError(f"count must be 'exact' or 'none', got {count!r}.")
        if order_by is None:
            order_by = list(self._mapper.primary_key)
        resolved: Any = self._resolve(filter_by)
        statement = self.select_statement(
            *where,
            order_by=order_by,
            limit=size,
            offset=(number - 1) * size,
            options=self._options("page", options),
            include_deleted=include_deleted,
            filter_by=resolved,
            search=search,
        )
        with self._translated():
            items = list((await self.session.execute(statement)).unique().scalars().all())
        total = None
        if count == "exact":
            if len(items) < size and (items or number == 1):
                # the last page: the rows before it and on it are all there are
                total = (number - 1) * size + len(items)
            else:
                total = await self.count(
                    *where, include_deleted=include_deleted, filter_by=resolved, search=search
                )
        return pagination.Page(items=items, total=total, number=number, size=size)
