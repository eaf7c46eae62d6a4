"""Public type variables and aliases for annotating code built on underlay.

Example:
    >>> from underlay.typing import ModelT
    >>> ModelT.__name__
    'ModelT'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar

from pydantic import BaseModel

__all__ = [
    "IdT",
    "IdT_contra",
    "ModelT",
    "SchemaT",
    "Values",
]

#: A mapped class (the entity type a repository is generic over).
ModelT = TypeVar("ModelT")

#: The type of a model's primary key (``int``, ``uuid.UUID``, a tuple for composite keys).
IdT = TypeVar("IdT")

#: The primary-key type where it is only accepted (protocol parameters), never returned.
IdT_contra = TypeVar("IdT_contra", contravariant=True)

#: A Pydantic model class used as an input or output schema.
SchemaT = TypeVar("SchemaT", bound=BaseModel)

#: Column values for a write, either a mapping of attribute names or a Pydantic model whose
#: *set* fields are used (``model_dump(exclude_unset=True)``).
Values: TypeAlias = Mapping[str, Any] | BaseModel
