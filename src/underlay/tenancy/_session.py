"""Tenant scoping on every ORM path, through the same mechanism as soft delete.

One ``do_orm_execute`` hook adds ``with_loader_criteria(TenantMixin, tenant_id == :tenant)``
to every ORM SELECT, UPDATE and DELETE; the parameter is read from the tenant context when
the statement executes, so one option serves every tenant. SQLAlchemy puts the criterion in
the WHERE of plain selects, subqueries, CTEs and unions that select a tenant entity, in the
ON clause of joins and joined eager loads, and in the statements selectin and lazy loaders
emit. With no tenant set, a statement that selects, updates or deletes a tenant model
raises `TenantRequiredError` before any SQL is sent, and a tenant model reached only
through a join matches no row.
``before_flush`` stamps new rows and refuses rows of another tenant; the identity map is
checked by ``get``. Writes outside the ORM are stamped by the column's Python default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, String, bindparam, event, inspect, text
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.sql import visitors

from underlay.exceptions import InvalidQueryError
from underlay.models import SoftDeleteMixin
from underlay.models._soft_delete import SessionTarget, mark_installed
from underlay.models._statements import with_option
from underlay.tenancy._context import (
    ALL_TENANTS,
    _tenant,
    current_actor,
    current_tenant,
    registry,
)
from underlay.tenancy._mixins import AuditMixin, TenantMixin

__all__ = ["TenantScopedSession", "enable_tenancy", "set_rls_tenant"]

_O = TypeVar("_O")

#: The PostgreSQL setting row-level-security policies read the tenant from.
RLS_SETTING = "underlay.tenant_id"
_RLS_ALL = "underlay.all_tenants"


def _tenant_value() -> str | None:
    # Read when a statement executes, not when it is built: one option, one statement cache
    # entry and one cache key serve every tenant. No tenant matches no row (tenant_id is
    # NOT NULL, and "tenant_id = NULL" is never true).
    tenant = _tenant.get()
    return tenant if isinstance(tenant, str) else None


_TENANT = bindparam("underlay_tenant", callable_=_tenant_value, type_=String())


def _own_rows(cls: Any) -> ColumnElement[bool]:
    # A module-level function, not a lambda: instances loaded with the option keep it in
    # their load options, and pickling an instance must find it by name.
    return cls.tenant_id == _TENANT  # type: ignore[no-any-return]


_OWN_ROWS = with_loader_criteria(TenantMixin, _own_rows, include_aliases=True)


def _scope(state: ORMExecuteState) -> None:
    if not registry.tenant_models:
        return
    if state.is_insert:
        _check_insert_parameters(state)
        return
    if not state.is_orm_statement or not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load:
        return  # refreshing an object the caller already holds
    tenant = _tenant.get()
    if tenant is ALL_TENANTS:
        if state.is_relationship_load:
            _lift_inherited(state)
        return
    if not isinstance(tenant, str) and _touches_tenant_table(state):
        current_tenant()  # raises TenantRequiredError, before any SQL
    # Without a tenant, a tenant model reached only through a join (not a selected entity,
    # so the check above cannot see it) matches no row.
    state.statement = with_option(state.statement, _OWN_ROWS, state.execution_options)


def _lift_inherited(state: ORMExecuteState) -> None:
    # A lazy load of an object read in a tenant's context carries that read's options; inside
    # all_tenants() it sees every tenant, like every other read there.
    statement: Any = state.statement
    if _OWN_ROWS in statement._with_options:
        statement = statement._generate()
        statement._with_options = tuple(o for o in statement._with_options if o is not _OWN_ROWS)
        state.statement = statement


def _touches_tenant_table(state: ORMExecuteState) -> bool:
    if any(issubclass(mapper.class_, TenantMixin) for mapper in state.all_mappers):
        return True
    # Entities in select_from(), joins or subqueries are not among all_mappers: look for
    # their tables in the statement (only on this path, where no tenant is set).
    tables = registry.tables
    statement: Any = state.statement
    return any(element in tables for element in visitors.iterate(statement))


def _check_insert_parameters(state: ORMExecuteState) -> None:
    mapper = state.bind_mapper
    if mapper is None or not issubclass(mapper.class_, TenantMixin):
        return
    tenant = _tenant.get()
    if tenant is ALL_TENANTS:
        return
    expected = current_tenant()
    parameters = state.parameters
    rows = parameters if isinstance(parameters, list) else [parameters] if parameters else []
    for row in rows:
        if isinstance(row, Mapping) and row.get("tenant_id", expected) != expected:
            raise InvalidQueryError(
                f"A {mapper.class_.__name__} row for another tenant cannot be written in "
                f"tenant {expected!r}'s context."
            )


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    actor = current_actor()
    for obj in session.new:
        if isinstance(obj, TenantMixin):
            _stamp_new(obj)
    for obj in session.dirty:
        if isinstance(obj, TenantMixin) and _changed(obj, "tenant_id"):
            raise InvalidQueryError(
                f"{type(obj).__name__}.tenant_id cannot change: move a row between tenants "
                "by copying it."
            )
        if (
            isinstance(obj, AuditMixin)
            and isinstance(obj, SoftDeleteMixin)
            and _changed(obj, "deleted_at")
        ):
            obj.deleted_by = actor if obj.deleted_at is not None else None
    for obj in session.deleted:
        if isinstance(obj, TenantMixin):
            _check_owner(obj)


def _stamp_new(obj: TenantMixin) -> None:
    tenant = _tenant.get()
    given = obj.__dict__.get("tenant_id")
    if tenant is ALL_TENANTS:
        if given is None:
            raise InvalidQueryError(
                f"Inside all_tenants() a new {type(obj).__name__} must name its tenant_id."
            )
        return
    expected = current_tenant()
    if given is None:
        obj.tenant_id = expected
    elif given != expected:
        raise InvalidQueryError(
            f"A {type(obj).__name__} for tenant {given!r} cannot be written in tenant "
            f"{expected!r}'s context."
        )


def _check_owner(obj: TenantMixin) -> None:
    if _tenant.get() is ALL_TENANTS:
        return
    if obj.tenant_id != current_tenant():
        raise InvalidQueryError(
            f"This {type(obj).__name__} belongs to another tenant and cannot be changed here."
        )


def _changed(obj: Any, key: str) -> bool:
    history = inspect(obj).attrs[key].history
    return bool(history.added or history.deleted)


class TenantScopedSession(Session):
    """A ``Session`` whose ``get`` never returns another tenant's row from the identity map."""

    def get(self, entity: type[_O] | Mapper[_O], ident: Any, **kw: Any) -> _O | None:
        """Return the instance with this primary key in the current tenant, or ``None``."""
        instance = super().get(entity, ident, **kw)
        if isinstance(instance, TenantMixin):
            tenant = _tenant.get()
            if tenant is not ALL_TENANTS and instance.tenant_id != current_tenant():
                return None
        return instance


def enable_tenancy(target: SessionTarget) -> None:
    """Scope the sessions made by ``target`` to the current tenant.

    Sessions from `underlay.Database` have this already; call it for your own session class,
    ``sessionmaker`` or ``async_sessionmaker`` (see `underlay.enable_soft_delete`, which takes
    the same targets).
    """
    from underlay.models._soft_delete import _sync_target  # noqa: PLC0415 - shared resolution

    sync = _sync_target(target)
    if mark_installed(sync, "underlay.tenancy"):
        event.listen(sync, "do_orm_execute", _scope)
        event.listen(sync, "before_flush", _before_flush)


def set_rls_tenant(session: Session, _transaction: Any, connection: Any) -> None:
    """Pass the current tenant to PostgreSQL row-level security for this transaction.

    An ``after_begin`` listener: ``set_config(..., true)`` is ``SET LOCAL``, scoped to the
    transaction, so it is safe behind PgBouncer's transaction pooling.
    """
    if connection.dialect.name != "postgresql":
        return
    tenant = _tenant.get()
    connection.execute(
        text("SELECT set_config(:name, :tenant, true), set_config(:all, :every, true)"),
        {
            "name": RLS_SETTING,
            "tenant": tenant if isinstance(tenant, str) else "",
            "all": _RLS_ALL,
            "every": "on" if tenant is ALL_TENANTS else "off",
        },
    )
