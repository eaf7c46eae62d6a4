"""``CachedRepository``: cache-aside reads of a repository, returned as Pydantic schemas."""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple, Protocol

from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import Select, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper
from sqlalchemy.sql.expression import FromClause

from underlay.cache._attach import session_touches
from underlay.cache._base import BaseCache, CheckedNames, check_namespaces
from underlay.cache._hit import EntityEntries, _Scope, cacheable, describe
from underlay.cache._keys import (
    format_id,
    lists_namespace,
    row_namespace,
    rows_namespace,
    schema_identity,
)
from underlay.cache._protocol import Cache
from underlay.exceptions import InvalidQueryError, NotFoundError
from underlay.tenancy._context import tenant_key
from underlay.typing import SchemaT

__all__ = ["CachedRepository"]


class _ListShape(NamedTuple):
    """What a list entry's key needs from a statement's structure, computed once."""

    sql: str  # the SELECT compiled for the dialect, bound values as placeholders
    tables: set[FromClause]
    namespaces: CheckedNames


# ``TypeAdapter(list[schema])`` by schema: list entries are validated straight from JSON.
_LIST_ADAPTERS: weakref.WeakKeyDictionary[type[BaseModel], TypeAdapter[Any]] = (
    weakref.WeakKeyDictionary()
)
# List entry shapes by (repository class, dialect, depends_on, statement cache key).
_LIST_SHAPES: dict[tuple[Any, ...], _ListShape] = {}
_MAX_LIST_SHAPES = 1024


class _Reads(Protocol):
    """The part of a repository that ``CachedRepository`` reads through."""

    @property
    def model(self) -> Any: ...  # pragma: no cover - protocol

    @property
    def session(self) -> AsyncSession: ...  # pragma: no cover - protocol

    async def get(
        self, id: Any, *, options: Sequence[Any] = ..., include_deleted: bool = ...
    ) -> Any: ...  # pragma: no cover - protocol

    async def list_all(
        self,
        *where: Any,
        order_by: Any = ...,
        limit: int | None = ...,
        offset: int | None = ...,
        options: Sequence[Any] = ...,
        include_deleted: bool = ...,
        filter_by: Mapping[str, Any] | None = ...,
    ) -> list[Any]: ...  # pragma: no cover - protocol

    def select_statement(
        self,
        *where: Any,
        order_by: Any = ...,
        limit: int | None = ...,
        offset: int | None = ...,
        options: Sequence[Any] = ...,
        include_deleted: bool = ...,
        filter_by: Mapping[str, Any] | None = ...,
    ) -> Select[Any]: ...  # pragma: no cover - protocol


class CachedRepository(EntityEntries[SchemaT]):
    """Cache-aside ``get`` and ``list_all`` over a repository, returning Pydantic schemas.

    Entries are keyed by the model, the repository's full query scope (the SELECT it would
    send: its base criteria, your criteria, ordering, pagination and loader options) and a
    fingerprint of ``schema``, so two differently scoped repositories never read each
    other's entries and a changed schema never reads old shapes. Writes through a
    :class:`~underlay.Database` created with ``cache=`` invalidate them when they commit.

    A session that has uncommitted changes to the model reads from the database and
    publishes nothing, so the cache only ever holds committed data. Reads never go through
    the cache for writes: use the repository itself to write.

    Args:
        repository: The repository to read through (for example a ``SQLAlchemyRepository``
            built on the current session).
        cache: The cache; use the one given to the ``Database``.
        schema: The Pydantic model returned (and cached) for each entity.
        ttl: Seconds an entry lives (default: the cache's ``default_ttl``).
        depends_on: Other mapped classes whose data the schema includes (relationships
            loaded through ``options``): any write to them invalidates these entries too.

    Example::

        async with db.session() as session:
            users = CachedRepository(UserRepository(session), cache, schema=UserOut)
            user = await users.get(user_id)            # UserOut | None
            admins = await users.list_all(User.role == "admin", order_by="name")
    """

    def __init__(
        self,
        repository: _Reads,
        cache: Cache,
        *,
        schema: type[SchemaT],
        ttl: float | None = None,
        depends_on: Iterable[type[Any]] = (),
    ) -> None:
        self.repository = repository
        self.cache = cache
        self.schema = schema
        self.ttl = ttl
        self.mapper: Mapper[Any] = inspect(repository.model)
        self._fingerprint = schema_identity(schema)
        self._table = self.mapper.base_mapper.local_table
        self._scopes: dict[tuple[Any, ...], _Scope] = {}
        self._row_head = f"r:{self._table.fullname}:"
        self._shared_scopes: dict[tuple[Any, ...], _Scope] | None = None
        self._dependencies: tuple[FromClause, ...] = tuple(
            table for model in depends_on for table in inspect(model).tables
        )

    def _parse_many(
        self,
        payloads: Mapping[str, bytes],
        cache: BaseCache,
        by_key: Mapping[str, Any],
        found: dict[Any, SchemaT],
    ) -> list[str]:
        """Validate payloads into ``found`` by id; return the keys the schema refused."""
        rejected = []
        for key, payload in payloads.items():
            try:
                parsed = self._parse(payload, cache)
            except ValidationError:
                rejected.append(key)
            else:
                if parsed is not None:
                    found[by_key[key]] = parsed
        return rejected

    def _parse_list(self, payload: bytes, cache: BaseCache) -> list[SchemaT]:
        """Validate a JSON array payload into a list of ``schema``."""
        if b'"$u"' in payload:  # the codec tagged a value: decode it the long way
            return [self.schema.model_validate(value) for value in cache.codec.decode(payload)]
        adapter = _LIST_ADAPTERS.get(self.schema)
        if adapter is None:
            adapter = _LIST_ADAPTERS[self.schema] = TypeAdapter(list[self.schema])  # type: ignore[name-defined]
        result: list[SchemaT] = adapter.validate_json(payload)
        return result

    async def get(
        self, id: Any, *, options: Sequence[Any] = (), include_deleted: bool = False
    ) -> SchemaT | None:
        """Return the entity with primary key ``id`` as ``schema``, or ``None``.

        The entry is keyed by the canonical key, so every spelling of one id (``5``,
        ``"5"``; a UUID in upper case) reads and invalidates the same entry. Reads whose
        ``options`` carry loader criteria (``with_loader_criteria``,
        ``relationship.and_(...)``) are not cached: they go to the database every time.

        Args:
            id: The primary key (a tuple for a composite key).
            options: Loader options, such as ``selectinload(User.posts)`` for a schema that
                includes the relationship (list its model in ``depends_on``).
            include_deleted: Also return a soft-deleted row.

        Raises:
            InvalidQueryError: ``id`` does not fit the primary key (nothing is read).
        """
        ident = self._canonical_id(id)
        key, namespaces, tables = self._entity_entry(ident, options, include_deleted)
        use_cache = not options or cacheable(options)
        fast = self._payload_cache
        if fast is not None and use_cache:
            if not session_touches(self._session.sync_session, tables):
                # A hit is one look-up (none in a near cache): the loader and the fill
                # decision (partials, no closures) are only called on a miss.
                payload = fast._near_payload(key)
                if payload is None:
                    payload = await fast.load(
                        key,
                        partial(self._load_entity, ident, options, include_deleted),
                        ttl=self.ttl,
                        namespaces=namespaces,
                        fill=partial(self._may_fill, tables),
                        raw=True,
                    )
                try:
                    return self._parse(payload, fast)
                except ValidationError:
                    pass  # the entry no longer fits the schema: reread below
            else:
                use_cache = False  # this transaction's own uncommitted rows: the database
        load = self._entity_loader(ident, options, include_deleted)
        value = await self._read(key, load, tables, namespaces, cacheable=use_cache)
        if value is None:
            return None
        try:
            return self.schema.model_validate(value)
        except ValidationError:
            # an entry the schema no longer accepts is a miss: drop it and read again
            value = await self._reread(key, load, tables, namespaces, cacheable=use_cache)
            return None if value is None else self.schema.model_validate(value)

    async def get_many(
        self, ids: Iterable[Any], *, options: Sequence[Any] = (), include_deleted: bool = False
    ) -> dict[Any, SchemaT]:
        """Return the entities with the given primary keys as ``schema``, by id.

        The cache is read in one round trip and every miss is loaded with one query
        (``WHERE pk IN (...)``). Ids without a (live) row are left out of the result.

        Args:
            ids: Primary keys (single-column keys only).
            options: Loader options, as for :meth:`get`.
            include_deleted: Also return soft-deleted rows.

        Returns:
            A mapping of each id that has a row (as its canonical key: ``"5"`` gives ``5``)
            to its schema.

        Raises:
            InvalidQueryError: The model has a composite primary key, or an id does not
                fit the key column (nothing is read).
        """
        if len(self.mapper.primary_key) != 1:
            raise InvalidQueryError("get_many needs a single-column primary key; use get per id")
        column = self.mapper.primary_key[0]
        if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
            raise InvalidQueryError(f"ids must be an iterable of keys, not {type(ids).__name__}.")
        wanted = list(dict.fromkeys(self._canonical_id(ident) for ident in ids))
        entries = {ident: self._entity_entry(ident, options, include_deleted) for ident in wanted}
        by_key = {key: ident for ident, (key, _, _) in entries.items()}
        # one scope for every id: the same tables
        tables = next(iter(entries.values()))[2] if entries else set()

        async def load(keys: list[str]) -> dict[str, Any]:
            asked = {format_id(by_key[key]): key for key in keys}
            entities = await self.repository.list_all(
                column.in_([by_key[key] for key in keys]),
                options=options,
                include_deleted=include_deleted,
            )
            found: dict[str, Any] = dict.fromkeys(keys)
            for entity in entities:
                key = asked.get(format_id(self.mapper.primary_key_from_instance(entity)))
                if key is not None:
                    found[key] = self.schema.model_validate(
                        entity, from_attributes=True
                    ).model_dump(mode="json")
            return found

        fill = self._fill_policy(tables) if not options or cacheable(options) else None
        fast = self._payload_cache
        found: dict[Any, SchemaT] = {}
        rejected: list[str] = []
        if fill is None:
            values = await load(list(by_key))
        elif fast is not None:
            payloads = await fast.load_many(
                {key: names for key, names, _ in entries.values()},
                self._detached(load),
                ttl=self.ttl,
                fill=fill,
                raw=True,
            )
            values = {}
            rejected = self._parse_many(payloads, fast, by_key, found)
        else:
            values = await self.cache.load_many(
                {key: names for key, names, _ in entries.values()},
                self._detached(load),
                ttl=self.ttl,
                fill=fill,
            )
        for key, value in values.items():
            if value is not None:
                try:
                    found[by_key[key]] = self.schema.model_validate(value)
                except ValidationError:
                    rejected.append(key)
        if rejected:
            # entries the schema no longer accepts are misses: drop them, read the rows
            await self.cache.delete(*rejected)
            for key, value in (await self._detached(load)(rejected)).items():
                if value is not None:
                    found[by_key[key]] = self.schema.model_validate(value)
        return {ident: found[ident] for ident in wanted if ident in found}

    async def get_one(
        self, id: Any, *, options: Sequence[Any] = (), include_deleted: bool = False
    ) -> SchemaT:
        """Return the entity with primary key ``id`` as ``schema``; like :meth:`get`.

        Raises:
            NotFoundError: No such (live) row.
        """
        found = await self.get(id, options=options, include_deleted=include_deleted)
        if found is None:
            raise NotFoundError(model=self.mapper.class_, id=id)
        return found

    async def list_all(
        self,
        *where: Any,
        order_by: Any = None,
        limit: int | None = None,
        offset: int | None = None,
        options: Sequence[Any] = (),
        include_deleted: bool = False,
        filter_by: Mapping[str, Any] | None = None,
    ) -> list[SchemaT]:
        """Return the entities matching the criteria as ``schema``; arguments as the repository's.

        Any committed insert, update or delete of the model (or of a ``depends_on`` model)
        invalidates every cached list of it. Reads with loader criteria in ``options`` are
        not cached (see `get`).

        Raises:
            InvalidQueryError: Bad sort or filter fields or values, or a bad ``limit`` /
                ``offset`` (nothing is read).
        """
        statement = self.repository.select_statement(
            *where,
            order_by=order_by,
            limit=limit,
            offset=offset,
            options=options,
            include_deleted=include_deleted,
            filter_by=filter_by,
        )
        digest, tables, namespaces = self._list_entry(statement, options)
        key = f"l:{self._table.fullname}:{digest}:{self._fingerprint}{tenant_key(tables)}"

        async def load() -> Any:
            entities = await self.repository.list_all(
                *where,
                order_by=order_by,
                limit=limit,
                offset=offset,
                options=options,
                include_deleted=include_deleted,
                filter_by=filter_by,
            )
            return [
                self.schema.model_validate(entity, from_attributes=True).model_dump(mode="json")
                for entity in entities
            ]

        use_cache = cacheable(options)
        fast = self._payload_cache
        if fast is not None and use_cache:
            if not session_touches(self._session.sync_session, tables):
                payload = await fast.load(
                    key,
                    self._detached(load),
                    ttl=self.ttl,
                    namespaces=namespaces,
                    fill=partial(self._may_fill, tables),
                    raw=True,
                )
                try:
                    return self._parse_list(payload, fast)
                except ValidationError:
                    pass  # the entry no longer fits the schema: reread below
            else:
                use_cache = False  # this transaction's own uncommitted rows: the database
        values = await self._read(key, load, tables, namespaces, cacheable=use_cache)
        try:
            return [self.schema.model_validate(value) for value in values]
        except ValidationError:
            # an entry the schema no longer accepts is a miss: drop it and read again
            values = await self._reread(key, load, tables, namespaces, cacheable=use_cache)
            return [self.schema.model_validate(value) for value in values]

    async def invalidate(self, *ids: Any) -> None:
        """Invalidate cached entries of this model, for writers that bypass underlay.

        Args:
            *ids: Primary keys whose entries to drop (and every list). With none, every
                entry of the model is dropped.

        Raises:
            InvalidQueryError: An id does not fit the primary key (nothing is invalidated).
        """
        names = {lists_namespace(table) for table in self.mapper.tables}
        if ids:
            canonical = [self._canonical_id(ident) for ident in ids]
            names.update(row_namespace(self.mapper, ident) for ident in canonical)
        else:
            names.update(rows_namespace(table) for table in self.mapper.tables)
        await self.cache.bump_namespace(*names)

    def _fill_policy(self, tables: set[FromClause]) -> bool | None:
        """``None``: bypass the cache; else whether loaded values may be published."""
        if session_touches(self._session.sync_session, tables):
            # This transaction's own uncommitted rows: neither served stale nor published.
            return None
        return self._may_fill(tables)

    async def _read(
        self,
        key: str,
        load: Callable[[], Awaitable[Any]],
        tables: set[FromClause],
        namespaces: Iterable[str],
        *,
        cacheable: bool,
    ) -> Any:
        if not cacheable or session_touches(self._session.sync_session, tables):
            return await load()
        fill: Any = partial(self._may_fill, tables)
        if not isinstance(self.cache, BaseCache):
            fill = fill()  # a cache of your own takes the decision up front
        return await self.cache.load(
            key, self._detached(load), ttl=self.ttl, namespaces=namespaces, fill=fill
        )

    async def _reread(
        self,
        key: str,
        load: Callable[[], Awaitable[Any]],
        tables: set[FromClause],
        namespaces: Iterable[str],
        *,
        cacheable: bool,
    ) -> Any:
        """Drop the entry ``key`` (its payload failed the schema) and read it again."""
        await self.cache.delete(key)
        value = await self._read(key, load, tables, namespaces, cacheable=cacheable)
        try:
            if isinstance(value, list):
                for item in value:
                    self.schema.model_validate(item)
            elif value is not None:
                self.schema.model_validate(value)
        except ValidationError:
            # the delete did not take (an unreachable cache): the database decides
            return await self._detached(load)()
        return value

    def _list_entry(
        self, statement: Select[Any], options: Sequence[Any]
    ) -> tuple[str, set[FromClause], CheckedNames]:
        """Return the digest, tables and namespaces of a list entry for ``statement``.

        Compiling a SELECT costs far more than a hit, so the compiled text and the tables
        are kept per statement structure (SQLAlchemy's cache key: the statement without its
        bound values), repository class, dialect and ``depends_on``; a read compiles only
        the first time a shape is seen. The digest covers that text and the call's bound
        values in order, so two statements share an entry only if they are the same query.
        """
        dialect = self._session.sync_session.get_bind().dialect
        cache_key = statement._generate_cache_key()
        if cache_key is None:  # a construct SQLAlchemy cannot key: compile every time
            tables = self._tables(statement)
            names = check_namespaces({lists_namespace(t) for t in tables})
            return self._digest(statement, options), tables, names
        memo = (type(self.repository), dialect.name, self._dependencies, cache_key.key)
        shape = _LIST_SHAPES.get(memo)
        if shape is None:
            tables = self._tables(statement)
            shape = _ListShape(
                str(statement.compile(dialect=dialect)),
                tables,
                check_namespaces({lists_namespace(t) for t in tables}),
            )
            if len(_LIST_SHAPES) >= _MAX_LIST_SHAPES:
                _LIST_SHAPES.clear()
            _LIST_SHAPES[memo] = shape
        parts = [
            type(self.repository).__qualname__,
            shape.sql,
            repr([param.effective_value for param in cache_key.bindparams]),
            repr(sorted(statement.get_execution_options().items())),
            *(describe(option) for option in options),
        ]
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
        return digest, shape.tables, shape.namespaces
