"""The repository base: model resolution, construction, scope and shared helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Generic, get_args, get_origin

from pydantic import BaseModel
from sqlalchemy import inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper
from sqlalchemy.sql.elements import ColumnElement

from underlay.exceptions import InvalidQueryError, translate_error
from underlay.models import SoftDeleteMixin
from underlay.query import (
    DEFAULT_LIMITS,
    FilterLimits,
    ResolvedFilter,
    SearchMode,
    SearchSpec,
    check_filterable,
    resolve_filter,
)
from underlay.repository._coerce import canonical_identity
from underlay.repository._query import (
    check_fields,
    coerce_values,
    column_map,
    mapper_of,
    values_dict,
)
from underlay.typing import ModelT

__all__ = ["RepositoryBase"]


def _model_from_bases(cls: type[Any]) -> type[Any] | None:
    for base in getattr(cls, "__orig_bases__", ()):
        origin = get_origin(base)
        if isinstance(origin, type) and issubclass(origin, RepositoryBase):
            args = get_args(base)
            if args and isinstance(args[0], type) and args[0] is not Any:
                return args[0]
    return None


class RepositoryBase(Generic[ModelT]):
    """State and helpers every repository method shares (see ``SQLAlchemyRepository``)."""

    model: type[ModelT]
    sortable_fields: ClassVar[tuple[str, ...]] = ()
    filterable_fields: ClassVar[tuple[str, ...]] = ()
    filter_operators: ClassVar[Mapping[str, Collection[str]]] = {}
    filter_limits: ClassVar[FilterLimits] = DEFAULT_LIMITS
    loader_options: ClassVar[Mapping[str, Sequence[Any]]] = {}
    search_fields: ClassVar[tuple[str, ...]] = ()
    search_mode: ClassVar[SearchMode] = "ilike"
    search_config: ClassVar[str] = "simple"
    search_vector: ClassVar[str | None] = None
    search_fts_table: ClassVar[str | None] = None
    _search_spec: ClassVar[SearchSpec | None] = None
    max_page_size: ClassVar[int] = 1000
    cursor_secret: ClassVar[str | bytes | None] = None

    _checked: ClassVar[bool] = False
    _mapper_cache: ClassVar[Mapper[Any] | None] = None
    _empty_filter: ClassVar[ResolvedFilter | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        generic = _model_from_bases(cls)
        declared = cls.__dict__.get("model")
        if generic is not None and declared is not None and declared is not generic:
            raise TypeError(
                f"{cls.__name__} is SQLAlchemyRepository[{generic.__name__}] but sets "
                f"model = {getattr(declared, '__name__', declared)!r}"
            )
        if generic is not None and declared is None:
            cls.model = generic
        cls._checked = False

    def __init__(self, session: AsyncSession, *, where: Sequence[ColumnElement[bool]] = ()) -> None:
        cls = type(self)
        if getattr(cls, "model", None) is None:
            raise TypeError(
                f"{cls.__name__} has no model: subclass SQLAlchemyRepository[Model] "
                "or set the model class attribute"
            )
        if not cls._checked:
            # validated at first use, when every related mapper can be configured
            check_fields(cls.model, cls.sortable_fields, kind="sortable")
            check_filterable(cls.model, cls.filterable_fields, cls.filter_operators)
            cls._search_spec = (
                SearchSpec(
                    cls.model,
                    tuple(cls.search_fields),
                    mode=cls.search_mode,
                    config=cls.search_config,
                    vector=cls.search_vector,
                    fts_table=cls.search_fts_table,
                )
                if cls.search_fields
                else None
            )
            cls._checked = True
        self.session = session
        self.scope: tuple[ColumnElement[bool], ...] = tuple(where)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model.__name__})"

    # -- helpers shared with the write methods ------------------------------------------

    @property
    def _mapper(self) -> Mapper[Any]:
        cls = type(self)
        mapper = cls.__dict__.get("_mapper_cache")
        if mapper is None:
            mapper = mapper_of(self.model)
            cls._mapper_cache = mapper
        return mapper

    @property
    def _dialect(self) -> Dialect:
        return self.session.sync_session.get_bind(self._mapper).dialect

    @property
    def _soft(self) -> bool:
        return issubclass(self.model, SoftDeleteMixin)

    def _id_criteria(self, id: Any) -> list[ColumnElement[bool]]:
        values = canonical_identity(self._mapper, id)
        return [
            column == value for column, value in zip(self._mapper.primary_key, values, strict=True)
        ]

    def _canonical_id(self, id: Any) -> Any:
        """Return ``id`` coerced to the key columns' types: a value, or a tuple if composite.

        Raises:
            InvalidQueryError: The id does not fit the primary key (before any SQL).
        """
        values = canonical_identity(self._mapper, id)
        return values[0] if len(values) == 1 else values

    def _identity(self, id_or_entity: Any) -> Any:
        if isinstance(id_or_entity, self.model):
            key = self._mapper.primary_key_from_instance(id_or_entity)
            return key[0] if len(key) == 1 else tuple(key)
        return self._canonical_id(id_or_entity)

    @contextmanager
    def _translated(self, id: Any = None) -> Iterator[None]:
        # a DatabaseSession already raises underlay errors; a user's own AsyncSession does not
        try:
            yield
        except SQLAlchemyError as exc:
            pool = getattr(self.session.bind, "pool", None)
            error = translate_error(exc, model=self.model, id=id, pool=pool)
            if error is None:
                raise
            raise error from exc

    def _resolve(self, filter_by: Any) -> ResolvedFilter:
        if isinstance(filter_by, ResolvedFilter):
            return filter_by
        if filter_by is None:
            # the common case, resolved once per class (a ResolvedFilter is never changed)
            cls = type(self)
            empty = cls.__dict__.get("_empty_filter")
            if empty is None:
                empty = cls._empty_filter = resolve_filter(
                    self.model,
                    None,
                    fields=self.filterable_fields,
                    operators=self.filter_operators,
                    limits=self.filter_limits,
                )
            return empty
        return resolve_filter(
            self.model,
            filter_by,
            fields=self.filterable_fields,
            operators=self.filter_operators,
            limits=self.filter_limits,
        )

    def _search(self, text: Any) -> tuple[Any, Any] | None:
        """Return (criterion, rank order) for search text, or ``None`` when there is none."""
        if text is None:
            return None
        spec = type(self)._search_spec
        if spec is None:
            raise InvalidQueryError(
                f"{type(self).__name__} declares no search_fields; it cannot search."
            )
        return spec.compile(text, dialect=self._dialect.name, limits=self.filter_limits)

    def _criteria(
        self,
        where: Sequence[Any],
        filter_by: Any,
        *,
        include_deleted: bool = False,
        search: Any = None,
    ) -> list[Any]:
        resolved = self._resolve(filter_by)
        criteria = [*self.scope]
        if not resolved.empty:
            criterion = resolved.criterion(
                include_deleted=include_deleted, dialect=self._dialect.name
            )
            if criterion is not None:
                criteria.append(criterion)
        found = self._search(search)
        if found is not None:
            criteria.append(found[0])
        return [*criteria, *where]

    @staticmethod
    def _fingerprint(resolved: ResolvedFilter, search: Any) -> str:
        if search is None:
            return resolved.fingerprint
        digest = hashlib.sha256(str(search).encode("utf-8", "replace")).hexdigest()[:16]
        return f"{resolved.fingerprint}|{digest}"

    def _options(self, method: str, options: Sequence[Any]) -> Sequence[Any]:
        defaults = self.loader_options.get(method) or self.loader_options.get("*")
        return [*defaults, *options] if defaults else options

    # -- entity input ---------------------------------------------------------------------

    def _entity_from(self, value: ModelT | BaseModel) -> ModelT:
        if isinstance(value, BaseModel):
            return self.model(**coerce_values(self.model, values_dict(self.model, value)))
        if not isinstance(value, self.model):
            raise InvalidQueryError(
                f"Expected a {self.model.__name__} or a Pydantic model, got {type(value).__name__}."
            )
        return value

    @property
    def _column_names(self) -> Mapping[str, Any]:
        return column_map(self.model)

    def _unloaded_columns(self, entity: Any) -> list[str]:
        unloaded = inspect(entity).unloaded
        return [name for name in self._column_names if name in unloaded]
