"""The wire objects of the sync protocol: the same Pydantic models in process and over HTTP."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, JsonValue

__all__ = [
    "ConflictInfo",
    "Cursor",
    "Mutation",
    "MutationResult",
    "PullRequest",
    "PullResponse",
    "PushRequest",
    "PushResponse",
    "RowState",
    "mutation_digest",
]

ConflictKind = Literal[
    "create_create", "update_update", "update_delete", "delete_update", "delete_delete"
]
Resolution = Literal["kept_remote", "kept_local", "merged", "deferred"]


class PullRequest(BaseModel):
    """Ask for the changes after ``cursor`` (``None``: everything in the client's scope)."""

    client_id: UUID
    schema_version: int
    protocol: Literal[1] = 1
    cursor: str | None = None
    tables: list[str] | None = None
    limit: int = Field(1000, ge=1, le=10_000)


class RowState(BaseModel):
    """A row as the server holds it: its version, whether it is a tombstone, its columns."""

    table: str
    id: UUID
    version: int
    deleted: bool
    data: dict[str, JsonValue] | None = None


class PullResponse(BaseModel):
    """One page of changes and the cursor to store with it."""

    changes: list[RowState]
    cursor: str | None
    has_more: bool
    resync_required: bool = False


class Mutation(BaseModel):
    """One row change made offline: the columns changed, and the server version it was based on."""

    mutation_id: int = Field(ge=1)
    tx_group: int
    table: str
    id: UUID
    op: Literal["upsert", "delete"]
    base_version: int = Field(ge=0)
    changed: dict[str, JsonValue] = Field(default_factory=dict)
    base_values: dict[str, JsonValue] | None = None
    hlc: str | None = None
    schema_version: int


class PushRequest(BaseModel):
    """A batch of mutations, in mutation id order."""

    client_id: UUID
    mutations: list[Mutation]
    acked_through: int = 0
    protocol: Literal[1] = 1


class ConflictInfo(BaseModel):
    """How the server resolved a mutation that met a concurrent change."""

    kind: ConflictKind
    policy: str
    resolution: Resolution
    reason: str | None = None


class MutationResult(BaseModel):
    """The outcome of one mutation; a retried mutation gets the same one, ``duplicate=True``."""

    mutation_id: int
    status: Literal["applied", "resolved", "rejected", "noop"]
    duplicate: bool = False
    row: RowState | None = None
    conflict: ConflictInfo | None = None
    error: str | None = None


class PushResponse(BaseModel):
    """The outcomes of a push, and the client's last mutation id the server has recorded."""

    results: list[MutationResult]
    last_mutation_id: int
    write_checkpoint: str


def mutation_digest(mutation: Mutation) -> str:
    """Return a hash of what a mutation asks for, to tell a retry from a reused id."""
    canonical = mutation.model_dump(mode="json", exclude={"tx_group", "schema_version"})
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in the server's change feed: every change up to ``(xid, seq)`` was sent.

    ``epoch`` changes when the server's history is replaced (a restore); a cursor of another
    epoch means a full resync.
    """

    epoch: str
    xid: int
    seq: int

    def encode(self) -> str:
        """Return the opaque token sent to clients."""
        return f"1.{self.epoch}.{self.xid}.{self.seq}"

    @classmethod
    def decode(cls, token: str) -> Cursor | None:
        """Parse a token; ``None`` if it is not one this server issued."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "1":
            return None
        try:
            return cls(parts[1], int(parts[2]), int(parts[3]))
        except ValueError:
            return None
