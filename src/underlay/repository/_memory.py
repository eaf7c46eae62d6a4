"""``InMemoryRepository``: a test double implementing the ``Repository`` protocol."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic

from pydantic import BaseModel

from underlay.exceptions import (
    InvalidQueryError,
    MultipleResultsError,
    NotFoundError,
    StaleVersionError,
)
from underlay.models import SoftDeleteMixin, TimestampMixin, VersionedMixin
from underlay.query import (
    DEFAULT_LIMITS,
    FilterInput,
    FilterLimits,
    SearchSpec,
    check_filterable,
    resolve_filter,
)
from underlay.repository._coerce import canonical_identity, check_count
from underlay.repository._query import coerce_values, column_map, mapper_of, values_dict
from underlay.typing import ModelT

__all__ = ["InMemoryRepository"]

Predicate = Callable[[Any], bool]


class InMemoryRepository(Generic[ModelT]):
    """A repository that keeps entities in a dict: a fast double for unit tests.

    It implements :class:`~underlay.Repository` and mirrors the behaviour of
    :class:`~underlay.SQLAlchemyRepository` that services rely on: integer keys are assigned
    on save, ``TimestampMixin`` / ``VersionedMixin`` / ``SoftDeleteMixin`` columns are
    maintained, ``update`` checks versions, and unknown fields raise
    :class:`~underlay.InvalidQueryError`. Criteria are plain predicates
    (``lambda user: user.active``) instead of SQL expressions; ``order_by`` takes the
    string form (``"-created_at,name"``). Nothing is copied: entities are shared, like a
    session's identity map.

    ``filter_by`` takes the same filters as the SQL repository and means the same thing
    (see `underlay.query`); use `for_repository` to take the declared fields of a
    repository class.

    Args:
        model: The mapped class stored.
        entities: Entities to start with.
        filterable_fields: Fields ``filter_by`` may name; ``None`` allows every column.
        filter_operators: Per-field allowed operators, as on ``SQLAlchemyRepository``.
        filter_limits: The bounds filters must keep.
        search_fields: Fields ``search=`` looks in (always with the ILIKE meaning: every
            word appears in some field, case-insensitively).

    Example:
        >>> import asyncio
        >>> from sqlalchemy import Column, Integer, String
        >>> from sqlalchemy.orm import DeclarativeBase
        >>> class Base(DeclarativeBase): ...
        >>> class Note(Base):
        ...     __tablename__ = "notes"
        ...     id = Column(Integer, primary_key=True)
        ...     text = Column(String)
        >>> notes = InMemoryRepository(Note)
        >>> saved = asyncio.run(notes.save(Note(text="hi")))
        >>> saved.id, asyncio.run(notes.count())
        (1, 1)
    """

    def __init__(
        self,
        model: type[ModelT],
        entities: Iterable[ModelT] = (),
        *,
        filterable_fields: Sequence[str] | None = None,
        filter_operators: Mapping[str, Collection[str]] | None = None,
        filter_limits: FilterLimits = DEFAULT_LIMITS,
        search_fields: Sequence[str] = (),
    ) -> None:
        self.model = model
        self._columns = column_map(model)
        self.filterable_fields = tuple(
            self._columns if filterable_fields is None else filterable_fields
        )
        self.filter_operators = dict(filter_operators or {})
        self.filter_limits = filter_limits
        check_filterable(model, self.filterable_fields, self.filter_operators)
        self._search_spec = SearchSpec(model, tuple(search_fields)) if search_fields else None
        keys = {id(column): name for name, column in self._columns.items()}
        self._pk = [keys[id(column)] for column in mapper_of(model).primary_key]
        self._rows: dict[Any, ModelT] = {}
        for entity in entities:
            self._store(entity)

    @classmethod
    def for_repository(
        cls, repository: type[Any], entities: Iterable[ModelT] = ()
    ) -> InMemoryRepository[ModelT]:
        """Return a double with the model and filter declarations of a repository class.

        Example::

            users = InMemoryRepository.for_repository(UserRepository, [User(email="a@x")])
        """
        return cls(
            repository.model,
            entities,
            filterable_fields=repository.filterable_fields,
            filter_operators=repository.filter_operators,
            filter_limits=repository.filter_limits,
            search_fields=repository.search_fields,
        )

    def __repr__(self) -> str:
        return f"InMemoryRepository({self.model.__name__}, {len(self._rows)} entities)"

    # -- helpers --------------------------------------------------------------------------

    def _key(self, entity: Any) -> Any:
        values = tuple(getattr(entity, name) for name in self._pk)
        return values[0] if len(values) == 1 else values

    def _identity(self, id_or_entity: Any) -> Any:
        if isinstance(id_or_entity, self.model):
            return self._key(id_or_entity)
        # the same coercion as the SQL repository: "5" finds 5, 1.5 and True are refused
        values = canonical_identity(mapper_of(self.model), id_or_entity)
        return values[0] if len(values) == 1 else values

    def _live(self, entity: Any, include_deleted: bool) -> bool:
        return include_deleted or not (
            isinstance(entity, SoftDeleteMixin) and entity.deleted_at is not None
        )

    def _store(self, entity: ModelT) -> ModelT:
        now = datetime.now(UTC)
        if len(self._pk) == 1 and getattr(entity, self._pk[0]) is None:
            used = [key for key in self._rows if isinstance(key, int)]
            setattr(entity, self._pk[0], max(used, default=0) + 1)
        key = self._key(entity)
        existing = self._rows.get(key)
        if existing is None:
            for name, column in self._columns.items():
                default = column.default
                if getattr(entity, name) is None and default is not None:
                    if default.is_scalar:
                        setattr(entity, name, default.arg)  # type: ignore[attr-defined]  # ColumnDefault
                    elif default.is_callable:
                        setattr(entity, name, default.arg(None))  # type: ignore[attr-defined]  # ColumnDefault
            if isinstance(entity, TimestampMixin):
                entity.created_at = entity.created_at or now
                entity.updated_at = now
            if isinstance(entity, VersionedMixin):
                entity.version = 1
        elif existing is not entity:
            raise InvalidQueryError(
                f"Another {self.model.__name__} with id {key!r} is stored; update that one."
            )
        else:
            self._touch(entity, now)
        self._rows[key] = entity
        return entity

    def _touch(self, entity: Any, now: datetime) -> None:
        if isinstance(entity, TimestampMixin):
            entity.updated_at = now
        if isinstance(entity, VersionedMixin):
            entity.version += 1

    def _select(
        self,
        where: tuple[Predicate, ...],
        include_deleted: bool,
        filter_by: FilterInput = None,
        search: str | None = None,
    ) -> list[ModelT]:
        searched: Predicate = lambda _entity: True  # noqa: E731 - a default predicate
        if search is not None:
            if self._search_spec is None:
                raise InvalidQueryError("This repository has no search_fields.")
            searched = self._search_spec.predicate(search, self.filter_limits)
        resolved = resolve_filter(
            self.model,
            filter_by,
            fields=self.filterable_fields,
            operators=self.filter_operators,
            limits=self.filter_limits,
        )
        matches = resolved.predicate(include_deleted=include_deleted)
        return [
            entity
            for entity in self._rows.values()
            if self._live(entity, include_deleted)
            and matches(entity)
            and searched(entity)
            and all(check(entity) for check in where)
        ]

    def _sorted(self, entities: list[ModelT], order_by: str | None) -> list[ModelT]:
        if order_by is not None and not isinstance(order_by, str):
            raise InvalidQueryError(f"order_by must be a string, not {type(order_by).__name__}.")
        if not order_by:
            return entities
        for term in reversed([part.strip() for part in order_by.split(",")]):
            name = term.lstrip("+-")
            if name not in self._columns:
                raise InvalidQueryError(f"Cannot sort {self.model.__name__} by {name!r}.")
            entities = sorted(
                entities,
                # NULLs last, as PostgreSQL sorts them
                key=lambda entity, name=name: _nulls_last(getattr(entity, name)),  # type: ignore[misc]  # bound per loop
                reverse=term.startswith("-"),
            )
        return entities

    # -- reads ----------------------------------------------------------------------------

    async def get(self, id: Any, *, include_deleted: bool = False) -> ModelT | None:
        """Return the entity with primary key ``id``, or ``None``."""
        entity = self._rows.get(self._identity(id))
        return entity if entity is not None and self._live(entity, include_deleted) else None

    async def get_one(self, id: Any, *, include_deleted: bool = False) -> ModelT:
        """Return the entity with primary key ``id``; raise ``NotFoundError`` if absent."""
        entity = await self.get(id, include_deleted=include_deleted)
        if entity is None:
            raise NotFoundError(model=self.model, id=self._identity(id))
        return entity

    async def one_or_none(
        self, *where: Predicate, include_deleted: bool = False, filter_by: FilterInput = None
    ) -> ModelT | None:
        """Return the one entity matching the predicates; raise if several match."""
        found = self._select(where, include_deleted, filter_by)
        if len(found) > 1:
            raise MultipleResultsError(model=self.model)
        return found[0] if found else None

    async def list_all(
        self,
        *where: Predicate,
        order_by: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        search: str | None = None,
    ) -> list[ModelT]:
        """Return the entities matching every predicate, optionally sorted and sliced."""
        if limit is not None:
            limit = check_count(limit, name="limit")
        start = 0 if offset is None else check_count(offset, name="offset")
        found = self._sorted(self._select(where, include_deleted, filter_by, search), order_by)
        return found[start : None if limit is None else start + limit]

    async def count(
        self,
        *where: Predicate,
        include_deleted: bool = False,
        filter_by: FilterInput = None,
        search: str | None = None,
    ) -> int:
        """Return how many entities match the predicates."""
        return len(self._select(where, include_deleted, filter_by, search))

    async def exists(
        self, *where: Predicate, include_deleted: bool = False, filter_by: FilterInput = None
    ) -> bool:
        """Return whether any entity matches the predicates."""
        return bool(self._select(where, include_deleted, filter_by))

    # -- writes ---------------------------------------------------------------------------

    async def save(self, entity: ModelT | BaseModel) -> ModelT:
        """Store a new entity (assigning its key and managed columns) or record a change."""
        if isinstance(entity, BaseModel):
            entity = self.model(**values_dict(self.model, entity))
        return self._store(entity)

    async def save_all(self, entities: Iterable[ModelT | BaseModel]) -> list[ModelT]:
        """Store several entities; see :meth:`save`."""
        return [await self.save(entity) for entity in entities]

    async def update(
        self,
        id: Any,
        values: Mapping[str, Any] | BaseModel,
        *,
        expected_version: int | None = None,
    ) -> ModelT:
        """Set the given fields of one entity, checking the version like the SQL repository.

        Raises:
            InvalidQueryError: Unknown or primary-key fields, values or an id that do not
                fit their columns, or nothing to set.
            StaleVersionError: The entity is not at the expected version.
            NotFoundError: No live entity has that id.
        """
        data = coerce_values(self.model, values_dict(self.model, values))
        if any(name in data for name in self._pk):
            raise InvalidQueryError("update() cannot change the primary key.")
        if "version" in data and issubclass(self.model, VersionedMixin):
            expected_version = data.pop("version")
        if not data:
            raise InvalidQueryError("update() needs at least one value to set besides the version.")
        entity = await self.get_one(id)
        if expected_version is not None and getattr(entity, "version", None) != expected_version:
            raise StaleVersionError(model=self.model, id=id, expected_version=expected_version)
        for name, value in data.items():
            setattr(entity, name, value)
        self._touch(entity, datetime.now(UTC))
        return entity

    def _check_version(self, key: Any, entity: Any, expected_version: int | None) -> None:
        if expected_version is None:
            return
        if not isinstance(entity, VersionedMixin):
            raise InvalidQueryError(f"{self.model.__name__} has no version column to check.")
        if entity.version != expected_version:
            raise StaleVersionError(model=self.model, id=key, expected_version=expected_version)

    async def delete(self, id_or_entity: Any, *, expected_version: int | None = None) -> None:
        """Delete softly for ``SoftDeleteMixin`` models (keeping a first timestamp).

        Raises:
            NotFoundError: No entity has that id.
            StaleVersionError: The entity is not at ``expected_version``.
        """
        key = self._identity(id_or_entity)
        entity = self._rows.get(key)
        if entity is None:
            raise NotFoundError(model=self.model, id=key)
        self._check_version(key, entity, expected_version)
        if not isinstance(entity, SoftDeleteMixin):
            del self._rows[key]
        elif entity.deleted_at is None:
            entity.deleted_at = datetime.now(UTC)
            self._touch(entity, entity.deleted_at)

    async def hard_delete(self, id_or_entity: Any, *, expected_version: int | None = None) -> None:
        """Remove the entity, soft-deleted or not (checking ``expected_version`` if given)."""
        key = self._identity(id_or_entity)
        entity = self._rows.get(key)
        if entity is None:
            raise NotFoundError(model=self.model, id=key)
        self._check_version(key, entity, expected_version)
        del self._rows[key]

    async def restore(self, id_or_entity: Any, *, expected_version: int | None = None) -> ModelT:
        """Clear ``deleted_at`` and return the entity (checking ``expected_version`` if given)."""
        key = self._identity(id_or_entity)
        entity = await self.get_one(key, include_deleted=True)
        if not isinstance(entity, SoftDeleteMixin):
            raise InvalidQueryError(f"{self.model.__name__} is not soft-deletable.")
        self._check_version(key, entity, expected_version)
        entity.deleted_at = None
        self._touch(entity, datetime.now(UTC))
        return entity

    async def delete_where(self, *where: Predicate, filter_by: FilterInput = None) -> int:
        """Delete every live entity matching the predicates and filter; return how many."""
        if not where and not filter_by:
            raise InvalidQueryError("delete_where() needs criteria; pass lambda _: True.")
        found = self._select(where, include_deleted=False, filter_by=filter_by)
        for entity in found:
            await self.delete(entity)
        return len(found)


def _nulls_last(value: Any) -> tuple[bool, Any]:
    return (value is None, value)
