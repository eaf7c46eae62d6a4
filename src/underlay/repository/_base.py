"""The repository base: model resolution, construction, scope and shared helpers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
from underlay.repository._coerce import canonical_identity
from underlay.repository._query import (
    check_fields,
    coerce_values,
    column_map,
    filter_criteria,
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
    max_page_size: ClassVar[int] = 1000
    cursor_secret: ClassVar[str | bytes | None] = None

    _checked: ClassVar[bool] = False

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
            check_fields(cls.model, cls.filterable_fields, kind="filterable")
            cls._checked = True
        self.session = session
        self.scope: tuple[ColumnElement[bool], ...] = tuple(where)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model.__name__})"

    # -- helpers shared with the write methods ------------------------------------------

    @property
    def _mapper(self) -> Mapper[Any]:
        return mapper_of(self.model)

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

    def _criteria(self, where: Sequence[Any], filter_by: Mapping[str, Any] | None) -> list[Any]:
        return [
            *self.scope,
            *filter_criteria(self.model, filter_by, self.filterable_fields),
            *where,
        ]

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
