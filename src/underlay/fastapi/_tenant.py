"""The per-request tenant (and actor) dependency: `tenant_context` for the whole request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Depends, HTTPException

from underlay.exceptions import InvalidQueryError
from underlay.tenancy._context import actor_context, tenant_context

__all__ = ["tenant_dependency"]


def tenant_dependency(
    resolve: Callable[..., str | Awaitable[str | None] | None],
    *,
    actor: Callable[..., str | Awaitable[str | None] | None] | None = None,
) -> Any:
    """Return a FastAPI dependency that runs the request inside `tenant_context`.

    ``resolve`` is itself a dependency (it can take a ``Request``, a header, the current
    user...) returning the request's tenant id. The tenant is in effect for the path
    operation and for every dependency that depends on this one, and the commit of
    `session_dependency` runs inside it too when the session dependency depends on it (or is
    declared after it). A request whose ``resolve`` returns ``None`` or an unusable id is
    answered 400 before any query runs: never "all tenants".

    Args:
        resolve: A dependency returning the tenant id, or ``None`` when the request names
            none.
        actor: An optional dependency returning who acts (`actor_context`, for
            `AuditMixin` columns).

    Returns:
        The ``Depends(...)`` marker: ``TenantDep = Annotated[str, tenant_dependency(f)]``.

    Example:
        >>> from typing import Annotated
        >>> from fastapi import Header
        >>> def tenant_from_header(x_tenant: Annotated[str | None, Header()] = None):
        ...     return x_tenant
        >>> TenantDep = Annotated[str, tenant_dependency(tenant_from_header)]
    """
    resolved = Depends(resolve)
    acted = Depends(actor if actor is not None else _nobody)

    async def underlay_tenant(tenant: Any = resolved, acting: Any = acted) -> AsyncIterator[str]:
        if tenant is None:
            raise HTTPException(status_code=400, detail="This request names no tenant.")
        try:
            scope = tenant_context(tenant)
            scope.__enter__()
        except InvalidQueryError as exc:
            raise HTTPException(status_code=400, detail="The tenant id is not usable.") from exc
        try:
            if acting is None:
                yield tenant
            else:
                with actor_context(acting):
                    yield tenant
        finally:
            scope.__exit__(None, None, None)

    return Depends(underlay_tenant, scope="function")


def _nobody() -> None:
    return None
