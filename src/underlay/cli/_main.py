"""The ``underlay`` command: argument parsing, the migration commands and error reporting."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import IO, Any

from underlay.cli._settings import CliError, Settings, load_settings
from underlay.exceptions import MissingDependencyError, UnderlayError

__all__ = ["main"]

# Exit statuses: 1 for a finding (drift, a failed check), 2 for a usage or set-up problem.
_FOUND = 1
_SETUP = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="underlay",
        description=(
            "Migrations and health checks for applications on underlay. The database URL "
            "comes from --database-url, UNDERLAY_DATABASE_URL or [tool.underlay] in "
            "pyproject.toml."
        ),
    )
    parser.add_argument("--database-url", help="the database URL (overrides the configuration)")
    parser.add_argument(
        "--migrations", help="the migrations directory (default: migrations, or configured)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create a migrations directory from the template")
    init.add_argument("directory", nargs="?", help="where to create it")
    legacy = commands.add_parser("init-migrations", help="the former name of init")
    legacy.add_argument("directory", nargs="?", help=argparse.SUPPRESS)

    revision = commands.add_parser("revision", help="write a new migration script")
    revision.add_argument("-m", "--message", required=True, help="what the migration does")
    revision.add_argument(
        "--autogenerate", action="store_true", help="fill it from the models' differences"
    )
    revision.add_argument("--rev-id", help="a revision id of your choosing")

    upgrade = commands.add_parser("upgrade", help="upgrade the database")
    upgrade.add_argument("revision", nargs="?", default="head", help="target (default: head)")
    upgrade.add_argument("--sql", action="store_true", help="print the SQL instead of running it")

    downgrade = commands.add_parser("downgrade", help="downgrade the database")
    downgrade.add_argument("revision", help="target: base, an id, or -1")

    check = commands.add_parser("check", help="fail when the models differ from the migrations")
    check.add_argument(
        "--require-fk-indexes",
        action="store_true",
        help="also fail on foreign keys without an index",
    )

    commands.add_parser(
        "stairway", help="walk every migration up, down and up again (empty database)"
    )
    commands.add_parser("history", help="list the migrations, marking the database's current one")

    doctor = commands.add_parser(
        "doctor", help="connect to the database and Redis and report what is misconfigured"
    )
    doctor.add_argument("--strict", action="store_true", help="fail on warnings too")
    return parser


def _is_progress(record: logging.LogRecord) -> bool:
    return record.getMessage().startswith(("Running ", "Detected "))


def _progress_logging(stream: IO[str]) -> None:
    """Show Alembic's per-migration lines as progress for the long commands."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    handler.addFilter(_is_progress)
    logger = logging.getLogger("alembic")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coroutine)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - only commands that take a URL

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by the command itself
        return "<unparsable URL>"


def _cmd_init(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    from underlay.migrations import init  # noqa: PLC0415 - needs the alembic extra

    directory = Path(args.directory) if args.directory else settings.migrations
    try:
        created = init(directory)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _FOUND
    print(
        f"Created {created}. Edit {created / 'env.py'} to import your models' Base, then run:\n"
        "  underlay upgrade\n"
        "  underlay revision --autogenerate -m 'initial'",
        file=out,
    )
    return 0


async def _cmd_revision(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    from underlay.migrations import revision  # noqa: PLC0415 - needs the alembic extra

    path = await revision(
        settings.require_database_url(),
        args.message,
        script_location=settings.migrations,
        autogenerate=args.autogenerate,
        rev_id=args.rev_id,
    )
    print(f"Created {path}", file=out)
    return 0


async def _cmd_upgrade(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    from underlay.migrations import upgrade, upgrade_sql  # noqa: PLC0415 - alembic extra

    url = settings.require_database_url()
    if args.sql:
        print(upgrade_sql(url, args.revision, script_location=settings.migrations), file=out)
        return 0
    await upgrade(url, args.revision, script_location=settings.migrations)
    print(f"Upgraded {_redact(url)} to {args.revision}", file=out)
    return 0


async def _cmd_downgrade(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    from underlay.migrations import downgrade  # noqa: PLC0415 - needs the alembic extra

    url = settings.require_database_url()
    await downgrade(url, args.revision, script_location=settings.migrations)
    print(f"Downgraded {_redact(url)} to {args.revision}", file=out)
    return 0


async def _cmd_check(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    from underlay.migrations import check  # noqa: PLC0415 - needs the alembic extra

    unindexed = await check(
        settings.require_database_url(),
        script_location=settings.migrations,
        require_foreign_key_indexes=args.require_fk_indexes,
    )
    print("The models match the migrations.", file=out)
    for key in unindexed:
        print(f"warning: {key}", file=out)
    return 0


async def _cmd_stairway(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    from underlay.migrations import stairway  # noqa: PLC0415 - needs the alembic extra

    url = settings.require_database_url()
    print(f"Walking the migrations on {_redact(url)}: each one up, down and up again", file=out)
    checked = await stairway(url, script_location=settings.migrations)
    print(f"Stairway passed: {len(checked)} migration(s)", file=out)
    return 0


async def _cmd_history(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    from underlay.cli._history import current_revisions, revisions  # noqa: PLC0415 - alembic

    scripts = revisions(settings.migrations)
    current: set[str] = set()
    if settings.database_url:
        current = set(await current_revisions(settings.database_url))
    if not scripts:
        print(f"No migrations in {settings.migrations}", file=out)
        return 0
    for rev, down, message, is_head in scripts:
        marks = [name for name, on in (("head", is_head), ("current", rev in current)) if on]
        suffix = f" ({', '.join(marks)})" if marks else ""
        print(f"{down or '<base>'} -> {rev}{suffix}, {message}", file=out)
    if settings.database_url and not current:
        print("The database has no migrations applied (run: underlay upgrade)", file=out)
    return 0


async def _cmd_doctor(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    from underlay.cli._doctor import doctor  # noqa: PLC0415 - keeps the start-up light

    return await doctor(settings, out=out, strict=args.strict)


_ASYNC_COMMANDS: dict[
    str, Callable[[Settings, argparse.Namespace, IO[str]], Coroutine[Any, Any, int]]
] = {
    "revision": _cmd_revision,
    "upgrade": _cmd_upgrade,
    "downgrade": _cmd_downgrade,
    "check": _cmd_check,
    "stairway": _cmd_stairway,
    "history": _cmd_history,
    "doctor": _cmd_doctor,
}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _dispatch(args: argparse.Namespace, out: IO[str]) -> int:
    settings = load_settings(database_url=args.database_url, migrations=args.migrations)
    if args.command in ("init", "init-migrations"):
        return _cmd_init(settings, args, out)
    if args.command in ("upgrade", "downgrade", "stairway", "revision"):
        _progress_logging(out)
    return _run(_ASYNC_COMMANDS[args.command](settings, args, out))


def main(argv: Sequence[str] | None = None, *, out: IO[str] | None = None) -> int:
    """Run the ``underlay`` command line.

    Args:
        argv: The arguments, without the program name; defaults to ``sys.argv[1:]``.
        out: Where the report goes; standard output by default. Errors go to standard error.

    Returns:
        The exit status: 0 on success, 1 when a check found a problem, 2 when the command
        could not run (configuration, a missing extra, an unreachable database).
    """
    args = _parser().parse_args(argv)
    stream = sys.stdout if out is None else out
    try:
        return _dispatch(args, stream)
    except MissingDependencyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _SETUP
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _SETUP
    except UnderlayError as exc:
        # Drift and stairway failures: the full message lists what to fix.
        print(f"error: {exc}", file=sys.stderr)
        return _FOUND
    except Exception as exc:
        kind = type(exc)
        if kind.__module__.startswith("alembic"):
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return _FOUND
        if kind.__module__.startswith("sqlalchemy") or isinstance(exc, OSError):
            print(f"error: the database cannot be used: {_one_line(exc)}", file=sys.stderr)
            return _SETUP
        raise
