"""Convert entities to Pydantic schemas, so API code never hands out ORM objects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from underlay.typing import SchemaT

__all__ = ["to_schema", "to_schemas"]


def to_schema(entity: Any, schema: type[SchemaT]) -> SchemaT:
    """Validate ``entity``'s attributes into ``schema``.

    Only the attributes the schema declares are read, so a relationship it does not name is
    never loaded. A relationship it does name must already be loaded (use loader options):
    with ``lazy="raise"`` a missing one raises instead of doing hidden IO.

    Args:
        entity: Any object with the schema's fields as attributes (usually an ORM entity).
        schema: The Pydantic model class.

    Returns:
        A new ``schema`` instance.

    Example:
        >>> from types import SimpleNamespace
        >>> from pydantic import BaseModel
        >>> class UserOut(BaseModel):
        ...     id: int
        ...     name: str
        >>> to_schema(SimpleNamespace(id=1, name="Ada", password="x"), UserOut)
        UserOut(id=1, name='Ada')
    """
    return schema.model_validate(entity, from_attributes=True)


def to_schemas(entities: Iterable[Any], schema: type[SchemaT]) -> list[SchemaT]:
    """Convert each of ``entities`` with :func:`to_schema`, keeping their order."""
    return [schema.model_validate(entity, from_attributes=True) for entity in entities]
