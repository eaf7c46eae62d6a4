"""PostgreSQL row-level security policies for tenant tables: defence in depth.

With the policy in place and `Database(url, tenant_rls=True)`, every transaction tells
PostgreSQL its tenant (``SET LOCAL`` through ``set_config(..., true)``), and the server itself
hides and refuses other tenants' rows, also for raw SQL sent through a session. Superusers
and roles with ``BYPASSRLS`` are never subject to policies; the table owner is only with
``FORCE ROW LEVEL SECURITY``, which these helpers set. Connect the application as an
ordinary role.
"""

from __future__ import annotations

from typing import Any

from underlay.exceptions import InvalidQueryError
from underlay.tenancy._session import _RLS_ALL, RLS_SETTING

__all__ = ["disable_tenant_rls", "enable_tenant_rls", "tenant_rls_statements"]

POLICY = "underlay_tenant_isolation"


def _ident(name: str) -> str:
    if not name or not all(char.isalnum() or char == "_" for char in name):
        raise InvalidQueryError(f"{name!r} is not a plain SQL identifier.")
    return f'"{name}"'


def tenant_rls_statements(table: str, *, column: str = "tenant_id") -> list[str]:
    """Return the SQL that puts ``table`` under tenant row-level security.

    Args:
        table: The table name.
        column: The tenant column.

    Returns:
        ``ENABLE`` and ``FORCE ROW LEVEL SECURITY`` and one policy for reads and writes.

    Example:
        >>> tenant_rls_statements("docs")[0]
        'ALTER TABLE "docs" ENABLE ROW LEVEL SECURITY'
    """
    quoted = _ident(table)
    check = (
        f"(current_setting('{_RLS_ALL}', true) = 'on' "
        f"OR {_ident(column)} = current_setting('{RLS_SETTING}', true))"
    )
    return [
        f"ALTER TABLE {quoted} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {quoted} FORCE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS {POLICY} ON {quoted}",
        f"CREATE POLICY {POLICY} ON {quoted} USING {check} WITH CHECK {check}",
    ]


def _drop_statements(table: str) -> list[str]:
    quoted = _ident(table)
    return [
        f"DROP POLICY IF EXISTS {POLICY} ON {quoted}",
        f"ALTER TABLE {quoted} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {quoted} DISABLE ROW LEVEL SECURITY",
    ]


def enable_tenant_rls(op: Any, table: str, *, column: str = "tenant_id") -> None:
    """Put ``table`` under tenant row-level security from an Alembic migration.

    A no-op on backends other than PostgreSQL, so one migration history serves both.

    Args:
        op: Alembic's ``op``.
        table: The table name.
        column: The tenant column.
    """
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in tenant_rls_statements(table, column=column):
        op.execute(statement)


def disable_tenant_rls(op: Any, table: str) -> None:
    """Undo `enable_tenant_rls` (the downgrade of the same migration)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in _drop_statements(table):
        op.execute(statement)
