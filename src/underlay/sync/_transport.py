"""The seam between a client and its server: in process, or over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from underlay._imports import require
from underlay.sync._errors import (
    ClientSchemaTooOldError,
    MutationIdReusedError,
    SyncPermissionError,
    SyncTransportError,
)
from underlay.sync._wire import PullRequest, PullResponse, PushRequest, PushResponse

if TYPE_CHECKING:
    import httpx

    from underlay.sync._server import SyncServer

__all__ = ["HttpTransport", "InProcessTransport", "SyncTransport"]

_R = TypeVar("_R", bound=BaseModel)


@runtime_checkable
class SyncTransport(Protocol):
    """Carries pulls and pushes to a `SyncServer`; failures raise `SyncTransportError`."""

    async def pull(self, request: PullRequest) -> PullResponse:
        """Send a pull and return the server's page."""
        ...

    async def push(self, request: PushRequest) -> PushResponse:
        """Send a push and return the server's results."""
        ...


class InProcessTransport:
    """Call a `SyncServer` in this process, as ``user``.

    Requests and responses go through their JSON form, exactly as over HTTP, so tests of
    this transport exercise what HTTP clients get.

    Args:
        server: The server to call.
        user: The authenticated user the calls are made as.
    """

    def __init__(self, server: SyncServer, user: Any) -> None:
        self.server = server
        self.user = user

    async def pull(self, request: PullRequest) -> PullResponse:
        """Run the pull on the server."""
        sent = PullRequest.model_validate_json(request.model_dump_json())
        response = await self.server.pull(sent, user=self.user)
        return PullResponse.model_validate_json(response.model_dump_json())

    async def push(self, request: PushRequest) -> PushResponse:
        """Run the push on the server."""
        sent = PushRequest.model_validate_json(request.model_dump_json())
        response = await self.server.push(sent, user=self.user)
        return PushResponse.model_validate_json(response.model_dump_json())


class HttpTransport:
    """Talk to a server's `SyncServer.fastapi_router` over HTTP with httpx (extra ``sync``).

    Args:
        base_url: The router's URL prefix, e.g. ``"https://api.example/sync"``.
        headers: Sent with every request (authentication is the application's).
        timeout: Seconds before a request counts as failed (and is resent by the next sync).
        client: An ``httpx.AsyncClient`` to use instead of one made here.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        httpx_module = require("httpx", extra="sync")
        self.base_url = base_url.rstrip("/")
        self._owns_client = client is None
        self._client: httpx.AsyncClient = client or httpx_module.AsyncClient(
            headers=headers, timeout=timeout
        )

    async def pull(self, request: PullRequest) -> PullResponse:
        """POST the pull to ``{base_url}/pull``."""
        return await self._post("/pull", request, PullResponse)

    async def push(self, request: PushRequest) -> PushResponse:
        """POST the push to ``{base_url}/push``."""
        return await self._post("/push", request, PushResponse)

    async def aclose(self) -> None:
        """Close the HTTP client made by this transport."""
        if self._owns_client:
            await self._client.aclose()

    async def _post(self, path: str, request: BaseModel, model: type[_R]) -> _R:
        httpx_module = require("httpx", extra="sync")
        try:
            response = await self._client.post(
                self.base_url + path,
                content=request.model_dump_json(),
                headers={"content-type": "application/json"},
            )
        except httpx_module.HTTPError as exc:
            raise SyncTransportError(f"{path[1:]} failed: {exc!r}") from exc
        status = response.status_code
        if status == 426:
            body = _json(response)
            raise ClientSchemaTooOldError(
                schema_version=int(body.get("schema_version", 0)),
                min_client_schema=int(body.get("min_client_schema", 0)),
            )
        if status == 409:
            body = _json(response)
            raise MutationIdReusedError(mutation_id=int(body.get("mutation_id", 0)))
        if status in {401, 403}:
            raise SyncPermissionError(f"the sync server refused the request ({status})")
        if status != 200:
            raise SyncTransportError(f"{path[1:]} answered HTTP {status}", status=status)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise SyncTransportError(f"{path[1:]} answered an invalid body") from exc


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    detail = body.get("detail", body) if isinstance(body, dict) else {}
    return detail if isinstance(detail, dict) else {}
