"""What `CachedRepository` reads with: entity keys and scopes, parsing, the miss's loader.

Everything an entity entry's key and namespaces need besides the id (the compiled SELECT's
digest, the tables, the namespaces of whole tables) is computed once per scope and shared
by the instances of one repository class. A `CachedRepository.get` hit is then a dictionary
look-up for the canonical id, two strings, one look-up in the store (one ``MGET`` on Redis,
no script, no flight, no lease) and one validation of the stored JSON; what only a miss
needs (the loader, the fill decision, the in-process flight) is made only on a miss.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar

from sqlalchemy import Select, Table, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import LoaderCriteriaOption, Mapper, Session
from sqlalchemy.sql import visitors
from sqlalchemy.sql.expression import FromClause

from underlay.cache._base import BaseCache, CheckedNames, check_namespaces
from underlay.cache._codec import JSONCodec
from underlay.cache._keys import format_id, lists_namespace, rows_namespace
from underlay.repository import SQLAlchemyRepository
from underlay.repository._coerce import canonical_identity
from underlay.tenancy._context import tenant_key
from underlay.typing import SchemaT

__all__ = ["EntityEntries", "cacheable", "describe"]

# Compiled entity scopes shared by instances of one repository class, per dialect.
_CLASS_SCOPES: dict[tuple[Any, ...], dict[tuple[Any, ...], _Scope]] = {}
_MAX_SCOPES = 256
# The scope memo of reads without options.
_PLAIN: dict[bool, tuple[Any, ...]] = {False: (False,), True: (True,)}
# Canonical primary keys by (mapper, type, value): coercing a key is far slower than a hit.
_CANONICAL: dict[tuple[Any, type[Any], Any], Any] = {}
_MAX_CANONICAL = 8192
_SIMPLE_IDS = (int, str, uuid.UUID)
# Whether a cache class is a BaseCache, by class.
_OURS: dict[type[Any], bool] = {}
# Isolation levels whose every statement sees the latest commits: a loader's view is then
# never older than the generations read just before it.
_FRESH_STATEMENTS = {"READ COMMITTED", "READ UNCOMMITTED", "AUTOCOMMIT"}

P = ParamSpec("P")
T = TypeVar("T")


class _Scope(NamedTuple):
    """What an entity entry's key and namespaces need besides the id, computed once."""

    head: str  # the key up to the schema's identity
    tables: set[FromClause]
    namespaces: tuple[str, ...]  # every namespace but the row's own, checked and sorted


class EntityEntries(Generic[SchemaT]):
    """The reading half of `CachedRepository`: entry keys and scopes, parsing, loading."""

    # Set by CachedRepository.__init__.
    repository: Any
    cache: Any
    schema: type[SchemaT]
    ttl: float | None
    mapper: Mapper[Any]
    _fingerprint: str
    _table: Any
    _scopes: dict[tuple[Any, ...], _Scope]
    _row_head: str
    _shared_scopes: dict[tuple[Any, ...], _Scope] | None
    _dependencies: tuple[FromClause, ...]

    @property
    def _session(self) -> AsyncSession:
        session: AsyncSession = self.repository.session
        return session

    @property
    def _payload_cache(self) -> BaseCache | None:
        """The cache, when its payloads are JSON this class may validate directly."""
        cache: BaseCache = self.cache
        kind = type(cache)
        ours = _OURS.get(kind)
        if ours is None:  # isinstance against an ABC is slow for a hit: asked once per class
            ours = _OURS[kind] = issubclass(kind, BaseCache)
        if ours and type(cache.codec) is JSONCodec:
            return cache
        return None

    def _parse(self, payload: bytes, cache: BaseCache) -> SchemaT | None:
        """Validate a JSON payload into ``schema`` (``None`` for a cached absent row)."""
        if payload == b"null":
            return None
        if b'"$u"' in payload:  # the codec tagged a value: decode it the long way
            return self.schema.model_validate(cache.codec.decode(payload))
        # What model_validate_json calls, without its keyword handling (a third of a
        # near-cache hit's validation).
        parsed: SchemaT = self.schema.__pydantic_validator__.validate_json(payload)
        return parsed

    async def _load_entity(self, ident: Any, options: Sequence[Any], include_deleted: bool) -> Any:
        """Load one entity (on a miss) as the JSON-ready dict of its schema, or ``None``."""
        load = self._entity_loader(ident, options, include_deleted)
        return await self._detached(load)()

    def _entity_loader(
        self, ident: Any, options: Sequence[Any], include_deleted: bool
    ) -> Callable[[], Awaitable[Any]]:
        """Return the loader of one entity, as the JSON-ready dict of its schema."""
        repository = self.repository
        schema = self.schema

        async def load() -> Any:
            entity = await repository.get(ident, options=options, include_deleted=include_deleted)
            if entity is None:
                return None
            return schema.model_validate(entity, from_attributes=True).model_dump(mode="json")

        return load

    def _entity_entry(
        self, id: Any, options: Sequence[Any], include_deleted: bool
    ) -> tuple[str, tuple[str, ...], set[FromClause]]:
        """Return the key, namespaces (checked) and tables of the entry of canonical ``id``."""
        memo = (include_deleted, *map(describe, options)) if options else _PLAIN[include_deleted]
        scopes = self._shared_scopes
        if scopes is None:
            scopes = self._scopes
            if self._class_wide_scope():
                # A request builds a new CachedRepository: share the compiled scope with
                # every instance of the same repository class, whose SELECT cannot differ.
                dialect = self._session.sync_session.get_bind().dialect.name
                shared = (type(self.repository), dialect, self._dependencies)
                scopes = _CLASS_SCOPES.setdefault(shared, {})
            self._shared_scopes = scopes
        scope = scopes.get(memo)
        if scope is None:
            # The scope does not depend on the id: compile it once.
            statement = self.repository.select_statement(
                options=options, include_deleted=include_deleted
            )
            tables = self._tables(statement)
            scope = _Scope(
                f"e:{self._table.fullname}:{self._digest(statement, options)}:",
                tables,
                check_namespaces(
                    {
                        *(rows_namespace(table) for table in self.mapper.tables),
                        *(lists_namespace(table) for table in tables - set(self.mapper.tables)),
                    }
                ),
            )
            if len(scopes) >= _MAX_SCOPES:
                scopes.clear()
            scopes[memo] = scope
        text = format_id(id)
        key = f"{scope.head}{self._fingerprint}{tenant_key(scope.tables)}:{text}"
        # row_namespace(mapper, id) for a canonical id, without coercing it again; it differs
        # from the scope's names (they name whole tables)
        row = f"{self._row_head}{text}"
        if "\n" in row:
            check_namespaces((row,))  # raises, as for any invalid namespace
        return key, CheckedNames((row, *scope.namespaces)), scope.tables

    def _class_wide_scope(self) -> bool:
        """Whether this repository's entity SELECT depends only on its class."""
        repository = self.repository
        return (
            isinstance(repository, SQLAlchemyRepository)
            and not repository.scope
            and type(repository).select_statement is SQLAlchemyRepository.select_statement
        )

    def _canonical_id(self, id: Any) -> Any:
        memo = (self.mapper, type(id), id) if type(id) in _SIMPLE_IDS else None
        if memo is not None:
            found = _CANONICAL.get(memo, _CANONICAL)
            if found is not _CANONICAL:
                return found
        values = canonical_identity(self.mapper, id)
        canonical = values[0] if len(values) == 1 else values
        if memo is not None:
            if len(_CANONICAL) >= _MAX_CANONICAL:
                _CANONICAL.clear()
            _CANONICAL[memo] = canonical
        return canonical

    def _may_fill(self, tables: set[FromClause]) -> bool:
        """Whether a value loaded now may be published (asked after the bypass check)."""
        # Objects the session already holds are returned as they were loaded (the ORM does
        # not overwrite them), possibly before a later commit: such loads are not published.
        sync = self._session.sync_session
        return not self._snapshot_may_lag() and not _holds_rows_of(sync, tables)

    def _detached(self, load: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Wrap ``load`` so the objects it adds to the session are let go afterwards.

        The caller gets schemas, never these objects; dropped, they cannot hold later
        cached reads in this session back from filling.
        """
        sync = self._session.sync_session

        async def detached(*args: P.args, **kwargs: P.kwargs) -> T:
            before = set(sync.identity_map.keys())
            try:
                return await load(*args, **kwargs)
            finally:
                for added in set(sync.identity_map.keys()) - before:
                    obj = sync.identity_map.get(added)
                    if obj is not None:
                        sync.expunge(obj)

        return detached

    def _snapshot_may_lag(self) -> bool:
        """Whether the session's reads may come from a snapshot older than now."""
        session = self._session
        if not session.in_transaction():
            return False
        engine = session.sync_session.get_bind()
        level = engine.get_execution_options().get("isolation_level")
        return (level or engine.dialect.default_isolation_level) not in _FRESH_STATEMENTS

    def _tables(self, statement: Select[Any]) -> set[FromClause]:
        found: set[FromClause] = {
            element for element in visitors.iterate(statement) if isinstance(element, Table)
        }
        return found | set(self.mapper.tables) | set(self._dependencies)

    def _digest(self, statement: Select[Any], options: Sequence[Any]) -> str:
        compiled = statement.compile(dialect=self._session.sync_session.get_bind().dialect)
        parts = [
            type(self.repository).__qualname__,
            str(compiled),
            repr(sorted((name, repr(value)) for name, value in compiled.params.items())),
            repr(sorted(statement.get_execution_options().items())),
            *(describe(option) for option in options),
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def _holds_rows_of(session: Session, tables: set[FromClause]) -> bool:
    """Whether the session's identity map holds an object stored in any of ``tables``."""
    seen: set[type[Any]] = set()
    for cls, *_ in list(session.identity_map.keys()):
        if cls not in seen:
            seen.add(cls)
            if tables.intersection(inspect(cls).tables):
                return True
    return False


def cacheable(options: Sequence[Any]) -> bool:
    """Whether no option carries loader criteria (which change the rows a read returns).

    ``with_loader_criteria(...)`` and ``relationship.and_(...)`` may hold any expression,
    lambdas included, so such reads are not cached rather than keyed on a guess.
    """
    for option in options:
        if isinstance(option, LoaderCriteriaOption):
            return False
        for item in getattr(option, "context", ()):
            if getattr(item, "_extra_criteria", ()):
                return False
    return True


def describe(option: Any) -> str:
    """Return a loader option's paths and strategies as text, for keys."""
    # Loader options have no stable textual form (their cache keys hold object addresses);
    # their paths and strategies are what changes the loaded data.
    parts = [type(option).__qualname__, str(getattr(option, "path", ""))]
    for item in getattr(option, "context", ()):
        parts += [str(getattr(item, "path", "")), repr(getattr(item, "strategy", ""))]
    return "/".join(parts)
