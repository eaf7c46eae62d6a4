"""Offline-first sync between SQLite clients and a PostgreSQL server.

Clients write locally and keep working offline; `SyncClient.sync` pushes their outbox and
pulls what changed on the server. The server stamps every write with its transaction id
(database triggers, so ORM, Core, bulk and raw SQL writes are all seen), hands out cursors
that cannot skip a row committed out of order, applies each pushed mutation at most once and
resolves conflicts by the table's policy. See the "Offline sync" guide.
"""

from underlay.sync._client import SyncClient, SyncReport
from underlay.sync._errors import (
    ClientSchemaTooOldError,
    MutationIdReusedError,
    SyncError,
    SyncPermissionError,
    SyncTransportError,
)
from underlay.sync._registry import (
    Conflict,
    Defer,
    KeepLocal,
    KeepRemote,
    Merge,
    SyncRegistry,
)
from underlay.sync._server import SyncServer
from underlay.sync._transport import HttpTransport, InProcessTransport, SyncTransport
from underlay.sync._wire import (
    ConflictInfo,
    Mutation,
    MutationResult,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    RowState,
)

__all__ = [
    "ClientSchemaTooOldError",
    "Conflict",
    "ConflictInfo",
    "Defer",
    "HttpTransport",
    "InProcessTransport",
    "KeepLocal",
    "KeepRemote",
    "Merge",
    "Mutation",
    "MutationIdReusedError",
    "MutationResult",
    "PullRequest",
    "PullResponse",
    "PushRequest",
    "PushResponse",
    "RowState",
    "SyncClient",
    "SyncError",
    "SyncPermissionError",
    "SyncRegistry",
    "SyncReport",
    "SyncServer",
    "SyncTransport",
    "SyncTransportError",
]
