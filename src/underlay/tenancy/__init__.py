"""Multi-tenancy, audit columns and UUIDv7 keys.

`TenantMixin` rows are visible and writable only inside `tenant_context` for their tenant;
`AuditMixin` records who wrote a row (`actor_context`); `UUIDv7Mixin` gives time-ordered
primary keys. The names are also exported from `underlay`.
"""

from underlay.tenancy._context import (
    actor_context,
    all_tenants,
    current_actor,
    current_tenant,
    tenant_context,
    tenant_if_set,
)
from underlay.tenancy._mixins import AuditMixin, TenantMixin, UUIDv7Mixin, tenant_default
from underlay.tenancy._rls import disable_tenant_rls, enable_tenant_rls, tenant_rls_statements
from underlay.tenancy._session import enable_tenancy
from underlay.tenancy._uuid import UUIDv7, uuid7

__all__ = [
    "AuditMixin",
    "TenantMixin",
    "UUIDv7",
    "UUIDv7Mixin",
    "actor_context",
    "all_tenants",
    "current_actor",
    "current_tenant",
    "disable_tenant_rls",
    "enable_tenancy",
    "enable_tenant_rls",
    "tenant_context",
    "tenant_default",
    "tenant_if_set",
    "tenant_rls_statements",
    "uuid7",
]
