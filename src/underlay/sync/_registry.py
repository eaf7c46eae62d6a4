"""Which models are synced, who sees which rows, and how conflicts resolve."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeAlias
from uuid import UUID

from pydantic import JsonValue, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from sqlalchemy import Column, ColumnElement, Table, inspect
from sqlalchemy.orm import Mapper
from sqlalchemy.types import TypeDecorator, TypeEngine

from underlay.models import SoftDeleteMixin, TimestampMixin, VersionedMixin

__all__ = [
    "Conflict",
    "Defer",
    "KeepLocal",
    "KeepRemote",
    "Merge",
    "MergeOutcome",
    "Policy",
    "SyncRegistry",
    "TableSpec",
]

Policy = Literal["server_wins", "client_wins", "lww", "merge"]
DeletePolicy = Literal["delete_wins", "update_wins"]

#: Columns the sync manages itself: never sent as changes, never writable by a client.
SYNC_COLUMNS = frozenset({"sync_xid", "sync_seq", "origin_client_id", "origin_mutation_id", "hlc"})


@dataclass(frozen=True)
class Conflict:
    """What a `merge` callback sees: the row at the client's base, the client's, the server's.

    Attributes:
        kind: ``"create_create"`` or ``"update_update"``.
        table: The table name.
        id: The row's primary key.
        base: The client's base values of the changed columns (``None`` if unknown).
        local: The server row with the client's changes applied.
        remote: The server row as it is now.
        changed: The columns the client changed, with its values.
        local_hlc: The client's hybrid logical clock for the change.
        remote_hlc: The clock of the server row's last change.
    """

    kind: str
    table: str
    id: UUID
    base: Mapping[str, Any] | None
    local: Mapping[str, Any]
    remote: Mapping[str, Any]
    changed: Mapping[str, Any]
    local_hlc: str | None
    remote_hlc: str | None


@dataclass(frozen=True)
class KeepRemote:
    """Keep the server row; the client's change is recorded as discarded."""


@dataclass(frozen=True)
class KeepLocal:
    """Apply the client's changed columns over the server row."""


@dataclass(frozen=True)
class Merge:
    """Write ``values`` (column name to value) over the server row."""

    values: Mapping[str, Any]


@dataclass(frozen=True)
class Defer:
    """Keep the server row and queue the conflict for a person to resolve (`sync_conflicts`)."""

    reason: str


MergeOutcome: TypeAlias = KeepRemote | KeepLocal | Merge | Defer
MergeCallback: TypeAlias = Callable[[Conflict], MergeOutcome]
ScopeCallback: TypeAlias = Callable[[Any], "ColumnElement[bool] | None"]


@dataclass(frozen=True)
class TableSpec:
    """How one synced model is served: its scope, policies and writable columns."""

    model: type[Any]
    scope: ScopeCallback | None
    policy: Policy
    deletes: DeletePolicy
    writable: frozenset[str]
    merge: MergeCallback | None
    adapters: dict[str, TypeAdapter[Any]] = field(repr=False, compare=False)
    renamed: Mapping[str, str] = field(default_factory=dict)

    @property
    def table(self) -> Table:
        """The model's table."""
        table: Table = self.model.__table__
        return table

    @property
    def name(self) -> str:
        """The table name used on the wire."""
        return self.table.name

    @cached_property
    def data_columns(self) -> tuple[Column[Any], ...]:
        """The model's columns, in table order (server-only sync columns are not mapped)."""
        return tuple(c for c in self.table.columns if c.name not in SYNC_COLUMNS)

    @property
    def pk(self) -> Column[Any]:
        """The primary key column (a UUID)."""
        return next(iter(self.table.primary_key.columns))

    def to_json(self, row: Mapping[str, Any]) -> dict[str, JsonValue]:
        """Return the model's columns of ``row`` as JSON-safe values."""
        return {c.name: to_jsonable_python(row[c.name]) for c in self.data_columns if c.name in row}

    def current_names(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``data`` with keys of renamed columns under their current names.

        A key that is a column now is kept as it is, even if an older column had that name.
        """
        if not self.renamed:
            return dict(data)
        moved: dict[str, Any] = {}
        for key, value in data.items():
            new = self.renamed.get(key) if key not in self.adapters else None
            moved[new or key] = value
        return moved

    def from_json(self, data: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
        """Return ``data`` as Python values of the columns' types; unknown keys are dropped.

        Raises:
            ValueError: ``strict`` and a key is no column, or a value does not fit its column.
        """
        values: dict[str, Any] = {}
        for key, value in data.items():
            adapter = self.adapters.get(key)
            if adapter is None:
                if strict:
                    raise ValueError(f"{self.name} has no synced column {key!r}")
                continue  # a column this side does not know yet (an older schema): strip it
            try:
                values[key] = None if value is None else adapter.validate_python(value)
            except ValidationError as exc:
                message = exc.errors()[0]["msg"]
                raise ValueError(f"{self.name}.{key}: {message} (got {value!r})") from None
        return values


class SyncRegistry:
    """The synced models and their rules, shared by the server and its clients.

    Args:
        schema_version: The schema version of the application (the Alembic head's ordinal);
            sent with every request so the server can refuse clients that are too old.

    Example:
        >>> registry = SyncRegistry(schema_version=1)
        >>> registry.tables
        []
    """

    def __init__(self, *, schema_version: int = 1) -> None:
        self.schema_version = schema_version
        self._specs: dict[str, TableSpec] = {}

    def register(
        self,
        model: type[Any],
        *,
        scope: ScopeCallback | None = None,
        policy: Policy | MergeCallback = "server_wins",
        deletes: DeletePolicy = "delete_wins",
        writable: Iterable[str] | None = None,
        renamed: Mapping[str, str] | None = None,
    ) -> None:
        """Sync ``model``'s rows between the server and its clients.

        Args:
            model: A mapped class with `SoftDeleteMixin`, `VersionedMixin` and a UUID primary
                key made by the client (UUIDv7 recommended).
            scope: ``scope(user)`` returns a SQL condition selecting the rows that user's
                clients see and may write (``None``: every row). Base it on columns a row
                never changes (an owner or tenant id).
            policy: How a change based on an old version resolves: ``"server_wins"`` (keep
                the server row, record the discarded change), ``"client_wins"`` (apply the
                changed columns over the server row), ``"lww"`` (the later hybrid logical
                clock wins), or a merge callback taking a `Conflict`.
            deletes: ``"delete_wins"``: a delete beats a concurrent update and an update of a
                deleted row is discarded; ``"update_wins"``: the update keeps (or brings
                back) the row.
            writable: Columns clients may change; default every column but the primary key,
                ``version``, ``deleted_at`` and the timestamps.
            renamed: Old column names and their current names (``{"note": "details"}``).
                Changes made under the old name (a client's outbox written before its
                migration, a push from a client that has not migrated yet) are read under the
                new one, on the client (`SyncClient.install`) and on the server.

        Raises:
            TypeError: The model lacks a mixin or a single UUID primary key.
            ValueError: A writable or renamed-to column does not exist, or the model is
                registered twice.
        """
        if not (issubclass(model, SoftDeleteMixin) and issubclass(model, VersionedMixin)):
            raise TypeError(
                f"{model.__name__} needs SoftDeleteMixin and VersionedMixin to be synced"
            )
        mapper: Mapper[Any] = inspect(model)
        table: Table = mapper.local_table  # type: ignore[assignment]  # a declarative model maps a Table
        pks = list(table.primary_key.columns)
        if len(pks) != 1 or _python_type(pks[0]) is not UUID:
            raise TypeError(f"{model.__name__} needs a single UUID primary key to be synced")
        if table.name in self._specs:
            raise ValueError(f"{model.__name__} ({table.name}) is registered already")
        system = {pks[0].name, "version", "deleted_at"}
        if issubclass(model, TimestampMixin):
            system |= {"created_at", "updated_at"}
        columns = [c for c in table.columns if c.name not in SYNC_COLUMNS]
        allowed = {c.name for c in columns} - system
        chosen = allowed if writable is None else set(writable)
        if unknown := chosen - allowed:
            raise ValueError(f"{model.__name__}: not writable columns {sorted(unknown)}")
        renames = dict(renamed or {})
        if missing := set(renames.values()) - {c.name for c in columns}:
            raise ValueError(f"{model.__name__}: renamed to unknown columns {sorted(missing)}")
        merge: MergeCallback | None = None
        if callable(policy):
            merge, policy = policy, "merge"
        adapters = {c.name: TypeAdapter(_python_type(c)) for c in columns}
        self._specs[table.name] = TableSpec(
            model=model,
            scope=scope,
            policy=policy,
            deletes=deletes,
            writable=frozenset(chosen),
            merge=merge,
            adapters=adapters,
            renamed=renames,
        )

    @property
    def tables(self) -> list[str]:
        """The synced table names, in registration order (parents before children)."""
        return list(self._specs)

    def spec(self, table: str) -> TableSpec | None:
        """Return the rules for ``table``, or ``None`` if it is not synced."""
        return self._specs.get(table)

    def specs(self) -> list[TableSpec]:
        """Return the rules of every synced table, in registration order."""
        return list(self._specs.values())


def _python_type(column: Column[Any]) -> Any:
    type_ = column.type
    python_type = _declared_python_type(type_)
    if python_type is object and isinstance(type_, TypeDecorator):
        # a TypeDecorator declares no type of its own (SQLAlchemy 2.0 raises, 2.1 says object):
        # the type it wraps knows
        python_type = _declared_python_type(type_.impl_instance)
    return Any if python_type is object else python_type  # JSON and custom types: as they are


def _declared_python_type(type_: TypeEngine[Any]) -> Any:
    try:
        return type_.python_type
    except NotImplementedError:
        return object
