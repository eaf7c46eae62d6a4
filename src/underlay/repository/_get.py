"""The primary-key read of `SQLAlchemyRepository.get`, without `Session.get`'s per-call work.

`Session.get` builds a new SELECT for every identity-map miss, and SQLAlchemy computes the
cache key of each new statement. The repository instead keeps one SELECT per mapped class,
with the primary key as bound parameters, marked `REUSABLE` so that the soft-delete and
tenant hooks add their criteria as memoized variants: executing the same statement objects
again reuses their cache keys. An identity-map hit, or a class whose relationships load by
join (its rows need de-duplicating), goes through `Session.get` as before, so every answer
is the one `Session.get` would give.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper

from underlay.models._statements import REUSABLE

__all__ = ["get_by_identity"]

_Plan = tuple[Select[Any], tuple[str, ...]]

# One plan per mapper (None: this class always uses Session.get). Mappers live as long as
# their classes; the dictionary grows with the number of mapped classes only.
_PLANS: dict[Mapper[Any], _Plan | None] = {}


def _plan(mapper: Mapper[Any]) -> _Plan | None:
    if any(relationship.lazy == "joined" for relationship in mapper.relationships):
        return None
    names = tuple(f"underlay_pk_{index}" for index in range(len(mapper.primary_key)))
    criteria = (
        column == bindparam(name, type_=column.type)
        for column, name in zip(mapper.primary_key, names, strict=True)
    )
    statement = select(mapper).where(*criteria).execution_options(**{REUSABLE: True})
    return statement, names


async def get_by_identity(
    session: AsyncSession, mapper: Mapper[Any], ident: tuple[Any, ...]
) -> Any:
    """Return the instance with the canonical primary key ``ident``, as `Session.get` would.

    Args:
        session: The session to read in.
        mapper: The mapper of the class.
        ident: The canonical key (see ``canonical_identity``).

    Returns:
        The instance or ``None``.
    """
    try:
        plan = _PLANS[mapper]
    except KeyError:
        plan = _PLANS[mapper] = _plan(mapper)
    if plan is None or mapper.identity_key_from_primary_key(ident) in session.identity_map:
        return await session.get(mapper.class_, ident)
    statement, names = plan
    result = await session.execute(statement, dict(zip(names, ident, strict=True)))
    return result.scalar_one_or_none()
