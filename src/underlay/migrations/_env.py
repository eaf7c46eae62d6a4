"""The Alembic ``env.py`` helper: online through the async engine, offline as SQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from alembic import context
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, pool
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.sql import sqltypes

from underlay.migrations import _sqlite
from underlay.migrations._compare import OPTION, compare_server_default, compare_type
from underlay.migrations._render import render_item
from underlay.migrations._rewrite import Decisions, rewrite

__all__ = ["include_object", "render_item", "run_migrations"]

try:  # Alembic 1.18+: CHECK constraints compared by name, an opt-in plugin
    import alembic.ext.checkconstraint_byname  # noqa: F401

    _CHECK_CONSTRAINTS_PLUGIN: str | None = "alembic.ext.checkconstraint_byname"
except ImportError:  # pragma: no cover - older Alembic: CHECK constraints are not compared
    _CHECK_CONSTRAINTS_PLUGIN = None

#: ``Config.attributes`` key under which the programmatic API hands env.py its connection.
CONNECTION_KEY = "connection"
#: ``Config.attributes`` keys for `revision`'s rename decisions and `check`'s mode.
RENAMES_KEY = "underlay_renames"
DROPS_KEY = "underlay_drops"
CHECKING_KEY = "underlay_check"


def run_migrations(
    target_metadata: MetaData | Sequence[MetaData] | None,
    *,
    url: str | URL | None = None,
    **configure_options: Any,
) -> None:
    """Run the migrations of the current Alembic command; call it from ``env.py``.

    Online mode uses the connection the programmatic API passed in (see
    :func:`underlay.migrations.upgrade`), or opens one with an async engine (a URL naming a
    sync driver, such as ``postgresql+psycopg2://``, gets a plain engine). The engine is
    driven by ``asyncio.run`` when no event loop is running, and from a worker thread with a
    loop of its own when one is (an async test, an application's start-up hook), so it never
    fails with "asyncio.run() cannot be called from a running event loop". Offline mode
    (``alembic upgrade --sql``) writes the SQL instead.

    Autogenerate is set up so that its scripts run unedited on PostgreSQL and SQLite, in
    both directions: batch mode everywhere (``render_as_batch=True``: on SQLite ``ALTER``
    operations recreate the table, on PostgreSQL they stay plain ``ALTER TABLE``), every
    name in a rendered type qualified and imported (`render_item`), PostgreSQL enum types
    dropped with the last table that uses them and created for new columns
    (``op.drop_enum``, ``op.create_enum``), and generated columns carried through SQLite
    table rebuilds. It compares types, server defaults, enum values (``op.alter_enum``) and
    partial-index predicates. A column dropped while another is added to the same table
    stops autogenerate with `PossibleRenameError` until you declare it a rename or a drop
    (`revision`'s ``renames``/``drops``, or ``-x rename=table.old:new`` / ``-x
    drop=table.column`` on the ``alembic`` command line).

    Args:
        target_metadata: Your models' metadata, for autogenerate (``Base.metadata``).
        url: The database URL; defaults to ``sqlalchemy.url`` from the Alembic config.
        **configure_options: Further ``context.configure`` options; they win over the
            defaults above.

    Raises:
        ValueError: No connection was handed in and no URL is configured.
    """
    config = context.config
    connection = config.attributes.get(CONNECTION_KEY)
    if connection is not None and not context.is_offline_mode():
        _run_on_connection(connection, target_metadata, configure_options)
        return
    configured = url if url is not None else config.get_main_option("sqlalchemy.url")
    if not configured:
        raise ValueError(
            "no database URL: pass url= to run_migrations() in env.py or set sqlalchemy.url"
        )
    database_url = make_url(configured)
    if context.is_offline_mode():
        options = _options(target_metadata, configure_options)
        context.configure(
            url=database_url,
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **options,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    if "+" in database_url.drivername and not database_url.get_dialect().is_async:
        # An explicitly sync driver (psycopg2, pysqlite) in alembic.ini: no event loop needed.
        engine = create_engine(database_url, poolclass=pool.NullPool)
        try:
            with engine.connect() as conn:
                _prepared(conn, target_metadata, configure_options)
                conn.commit()
        finally:
            engine.dispose()
        return
    _run_coroutine(_run_online(database_url, target_metadata, configure_options))


# underlay.sync stamps rows with xid8 columns; reflection must know the type name, or every
# autogenerate on a synced database warns "Did not recognize type 'xid8'" before
# include_object can leave the column out.
postgresql_base.ischema_names.setdefault("xid8", sqltypes.NullType)

#: Objects `underlay.sync` adds to a server database; they are not mapped, so not drift.
_SYNC_COLUMNS = frozenset({"sync_xid", "sync_seq", "origin_client_id", "origin_mutation_id", "hlc"})


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Leave the offline sync's own tables, columns and indexes out of autogenerate.

    The default ``include_object`` of `run_migrations`; pass your own to replace it.
    """
    if not reflected or compare_to is not None or name is None:
        return True
    if type_ == "table":
        return not name.startswith("underlay_sync_")
    if type_ == "column":
        return name not in _SYNC_COLUMNS
    if type_ == "index":
        return not name.endswith("_sync_cursor")
    return True


def _options(
    target_metadata: MetaData | Sequence[MetaData] | None,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "target_metadata": target_metadata,
        "compare_type": compare_type,
        "compare_server_default": True,
        "render_as_batch": True,
        "render_item": render_item,
        "include_object": include_object,
        OPTION: True,
    }
    if _CHECK_CONSTRAINTS_PLUGIN is not None:
        options["autogenerate_plugins"] = ["alembic.autogenerate.*", _CHECK_CONSTRAINTS_PLUGIN]
    overrides = dict(overrides)
    user_hook = overrides.pop("process_revision_directives", None)
    options.update(overrides)
    options["process_revision_directives"] = _RevisionHook(target_metadata, user_hook)
    return options


class _RevisionHook:
    """``process_revision_directives``: underlay's rewrite, then the user's own hook."""

    def __init__(self, target_metadata: MetaData | Sequence[MetaData] | None, user: Any) -> None:
        self.target_metadata = target_metadata
        self.user = user

    def __call__(
        self, migration_context: MigrationContext, revision: Any, directives: list[Any]
    ) -> None:
        config = context.config
        if not _checking(config) and directives:
            script = directives[0]
            if isinstance(script, ops.MigrationScript):
                decisions = Decisions.parse(
                    config.attributes.get(RENAMES_KEY),
                    config.attributes.get(DROPS_KEY),
                    context.get_x_argument(),
                )
                rewrite(script, self.target_metadata, migration_context.bind, decisions)
        if self.user is not None:
            self.user(migration_context, revision, directives)


def _checking(config: Any) -> bool:
    if config.attributes.get(CHECKING_KEY):
        return True
    command = getattr(config.cmd_opts, "cmd", None)
    if not command:
        return False
    return getattr(command[0], "__name__", "") == "check"


def _run_on_connection(
    connection: Connection,
    target_metadata: MetaData | Sequence[MetaData] | None,
    overrides: dict[str, Any],
) -> None:
    options = _options(target_metadata, overrides)
    context.configure(connection=connection, **options)
    with _impl_hooks(connection), context.begin_transaction():
        context.run_migrations()


@contextmanager
def _impl_hooks(connection: Connection) -> Iterator[None]:
    # Instance attributes on this run's implementation object: other Alembic environments
    # in the process keep Alembic's behaviour.
    impl: Any = context.get_context().impl
    impl.compare_server_default = compare_server_default
    try:
        with _sqlite.generated_columns(connection):
            yield
    finally:
        del impl.compare_server_default


async def _run_online(
    url: URL,
    target_metadata: MetaData | Sequence[MetaData] | None,
    overrides: dict[str, Any],
) -> None:
    # Imported here: underlay.database is the layer above, and env.py may run without it.
    from underlay.database import Database  # noqa: PLC0415

    # One connection, closed on this loop: a pooled connection would outlive the loop.
    database = Database(url, poolclass=pool.NullPool)
    try:
        async with database.engine.connect() as conn:
            await conn.run_sync(_prepared, target_metadata, overrides)
            await conn.commit()
    finally:
        await database.dispose()


def _prepared(
    connection: Connection,
    target_metadata: MetaData | Sequence[MetaData] | None,
    overrides: dict[str, Any],
) -> None:
    with sqlite_foreign_keys_off(connection):
        _run_on_connection(connection, target_metadata, overrides)


class sqlite_foreign_keys_off:  # noqa: N801 - used like a function
    """Turn SQLite's foreign key enforcement off for the block (no-op on other backends).

    Batch mode recreates tables (copy, drop, rename); with enforcement on, dropping a
    referenced table fails or cascades. The pragma only works outside a transaction, so it
    is sent on the raw DBAPI connection before SQLAlchemy begins one.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.active = connection.dialect.name == "sqlite" and not connection.in_transaction()

    def _pragma(self, value: str) -> None:
        dbapi_connection = self.connection.connection.dbapi_connection
        if dbapi_connection is None:  # pragma: no cover - an open connection always has one
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA foreign_keys = {value}")
        finally:
            cursor.close()

    def __enter__(self) -> None:
        if self.active:
            self._pragma("OFF")

    def __exit__(self, *exc_info: object) -> None:
        if self.active:
            if self.connection.in_transaction():
                self.connection.commit() if exc_info[0] is None else self.connection.rollback()
            self._pragma("ON")


def _run_coroutine(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    # A loop is running in this thread (and blocked on us): run on a loop of our own.
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="underlay-migrations")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
