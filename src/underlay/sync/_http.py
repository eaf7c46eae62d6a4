"""The HTTP face of a `SyncServer`: a FastAPI router with ``POST /pull`` and ``POST /push``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException

from underlay.sync._errors import (
    ClientSchemaTooOldError,
    MutationIdReusedError,
    SyncPermissionError,
)
from underlay.sync._wire import PullRequest, PullResponse, PushRequest, PushResponse

if TYPE_CHECKING:
    from underlay.sync._server import SyncServer

__all__ = ["sync_router"]


def sync_router(server: SyncServer, get_user: Callable[..., Any]) -> APIRouter:
    """Return a router serving ``server``; ``get_user`` is the app's auth dependency."""
    router = APIRouter()
    http_exception = HTTPException
    user_dependency = Depends(get_user)

    def refuse(exc: Exception) -> HTTPException:
        if isinstance(exc, ClientSchemaTooOldError):
            return http_exception(
                426,
                detail={
                    "error": "client_schema_too_old",
                    "schema_version": exc.schema_version,
                    "min_client_schema": exc.min_client_schema,
                },
            )
        if isinstance(exc, MutationIdReusedError):
            return http_exception(
                409, detail={"error": "mutation_id_reused", "mutation_id": exc.mutation_id}
            )
        if isinstance(exc, SyncPermissionError):
            return http_exception(403, detail={"error": "forbidden"})
        return http_exception(400, detail={"error": "bad_request", "message": str(exc)})

    async def pull(request: PullRequest, user: Any = user_dependency) -> PullResponse:
        try:
            return await server.pull(request, user=user)
        except (ClientSchemaTooOldError, SyncPermissionError, ValueError) as exc:
            raise refuse(exc) from exc

    async def push(request: PushRequest, user: Any = user_dependency) -> PushResponse:
        try:
            return await server.push(request, user=user)
        except (ClientSchemaTooOldError, MutationIdReusedError, SyncPermissionError) as exc:
            raise refuse(exc) from exc

    router.add_api_route("/pull", pull, methods=["POST"], response_model=PullResponse)
    router.add_api_route("/push", push, methods=["POST"], response_model=PushResponse)
    return router
