"""Who is asking: the tenant and the actor of the current task, as context variables.

`tenant_context("acme")` scopes every ORM read and write of `TenantMixin` models in the block
to that tenant; `actor_context("ada")` names who makes the writes (`AuditMixin`). Both are
`contextvars`, so each asyncio task (each request) has its own value and a value set in one
task never leaks into another. Nothing set means "refuse": a query of a tenant model without
a tenant raises `TenantRequiredError` before any SQL. `all_tenants()` is the one explicit way
to read across tenants (admin jobs, migrations of data).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, Final
from urllib.parse import quote

from underlay.exceptions import InvalidQueryError, TenantRequiredError

__all__ = [
    "actor_context",
    "all_tenants",
    "current_actor",
    "current_tenant",
    "inside_all_tenants",
    "tenant_context",
    "tenant_if_set",
    "tenant_key",
    "tenant_or_all",
]


class _AllTenants:
    def __repr__(self) -> str:
        return "ALL_TENANTS"


#: The value of the tenant variable inside `all_tenants()`.
ALL_TENANTS: Final = _AllTenants()

_tenant: ContextVar[str | _AllTenants | None] = ContextVar("underlay.tenant", default=None)
_actor: ContextVar[str | None] = ContextVar("underlay.actor", default=None)

_MAX_ID = 64


class _Registry:
    #: Whether any model uses TenantMixin: until one does, sessions skip the tenant hook.
    tenant_models = False
    #: The tables of tenant models, to recognise a statement that touches one.
    tables: ClassVar[set[Any]] = set()


registry = _Registry()


def _checked(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID or "\x00" in value:
        raise InvalidQueryError(
            f"A {what} must be a non-empty string of at most {_MAX_ID} characters without NUL, "
            f"got {value!r:.80}."
        )
    return value


@contextmanager
def tenant_context(tenant: str) -> Iterator[str]:
    """Scope ORM reads and writes of tenant models in the block to ``tenant``.

    Args:
        tenant: The tenant's id, as stored in `TenantMixin.tenant_id`.

    Yields:
        ``tenant``.

    Raises:
        InvalidQueryError: ``tenant`` is empty, too long or not a string.

    Example:
        >>> with tenant_context("acme"):
        ...     current_tenant()
        'acme'
    """
    token = _tenant.set(_checked(tenant, "tenant"))
    try:
        yield tenant
    finally:
        _tenant.reset(token)


@contextmanager
def all_tenants() -> Iterator[None]:
    """Lift tenant scoping in the block: reads see every tenant's rows.

    The escape hatch for administration and data jobs. Writes of tenant models inside it
    must name their tenant themselves (``tenant_id``), since there is no current one.
    """
    token = _tenant.set(ALL_TENANTS)
    try:
        yield
    finally:
        _tenant.reset(token)


@contextmanager
def actor_context(actor: str) -> Iterator[str]:
    """Name who makes the writes in the block (`AuditMixin` columns).

    Args:
        actor: A user or service id.

    Yields:
        ``actor``.

    Raises:
        InvalidQueryError: ``actor`` is empty, too long or not a string.
    """
    token = _actor.set(_checked(actor, "actor"))
    try:
        yield actor
    finally:
        _actor.reset(token)


def current_tenant() -> str:
    """Return the current tenant.

    Raises:
        TenantRequiredError: No tenant is set (or only `all_tenants()` is in effect).
    """
    tenant = _tenant.get()
    if isinstance(tenant, str):
        return tenant
    raise TenantRequiredError(
        "No tenant is set for this task: wrap the work in tenant_context(tenant_id) "
        "(or all_tenants() for an explicit cross-tenant read)."
    )


def tenant_if_set() -> str | None:
    """Return the current tenant, or ``None`` when none is set or inside `all_tenants()`.

    For what only carries the tenant along (outbox events, sessions), where "no tenant" is a
    legitimate value rather than a forgotten one.
    """
    tenant = _tenant.get()
    return tenant if isinstance(tenant, str) else None


def tenant_or_all() -> str | _AllTenants:
    """Return the current tenant, or `ALL_TENANTS` inside `all_tenants()`.

    Raises:
        TenantRequiredError: Neither is in effect.
    """
    tenant = _tenant.get()
    if tenant is None:
        return current_tenant()  # raises, with the explanation
    return tenant


def inside_all_tenants() -> bool:
    """Return whether `all_tenants()` is in effect."""
    return _tenant.get() is ALL_TENANTS


def tenant_key(tables: Iterable[Any]) -> str:
    """Return the part of a cache key that keeps tenants apart, for reads of ``tables``.

    Empty when none of the tables belongs to a tenant model; else the current tenant
    (``*`` inside `all_tenants()`), percent-encoded so it cannot forge another key.

    Raises:
        TenantRequiredError: A tenant table is read and no tenant is set.
    """
    if not registry.tables or registry.tables.isdisjoint(tables):
        return ""
    tenant = tenant_or_all()
    return ":t=*" if tenant is ALL_TENANTS else f":t={quote(str(tenant), safe='')}"


def current_actor() -> str | None:
    """Return the current actor, or ``None`` when none is set."""
    return _actor.get()
