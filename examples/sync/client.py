"""A command-line client: works on its own SQLite file, offline, until told to sync.

    python -m examples.sync.client --db alice.db --user alice add "buy milk" list
    python -m examples.sync.client --db alice.db --user alice \
        --url http://127.0.0.1:8120/sync sync list

Commands run in order: ``add TEXT``, ``edit ID TEXT``, ``delete ID``, ``sync``, ``list``.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from examples.sync.models import Base, Note, make_registry

from underlay import Database, SQLAlchemyRepository
from underlay.sync import HttpTransport, SyncClient


class NoteRepository(SQLAlchemyRepository[Note]):
    sortable_fields = ("text",)


async def main(args: argparse.Namespace) -> None:
    database = Database(f"sqlite+aiosqlite:///{args.db}")
    await database.create_all(Base.metadata)
    transport = HttpTransport(args.url, headers={"X-User": args.user})
    client = SyncClient(database, make_registry(), transport=transport)
    await client.install()
    commands = list(args.commands)
    try:
        while commands:
            command = commands.pop(0)
            if command == "add":
                async with database.session() as session:
                    note = await NoteRepository(session).save(
                        Note(owner=args.user, text=commands.pop(0))
                    )
                print(f"added {note.id}")
            elif command == "edit":
                note_id, text = uuid.UUID(commands.pop(0)), commands.pop(0)
                async with database.session() as session:
                    await NoteRepository(session).update(note_id, {"text": text})
            elif command == "delete":
                async with database.session() as session:
                    await NoteRepository(session).delete(uuid.UUID(commands.pop(0)))
            elif command == "sync":
                report = await client.sync()
                print(f"synced: pushed {report.pushed}, pulled {report.pulled}")
            elif command == "list":
                async with database.session() as session:
                    notes = await NoteRepository(session).list_all(order_by="text")
                for note in notes:
                    print(f"note {note.id} {note.text}")
            else:
                raise SystemExit(f"unknown command {command!r}")
    finally:
        await transport.aclose()
        await database.dispose()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line (``argv``, or the process's arguments)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--url", default="http://127.0.0.1:8120/sync")
    parser.add_argument("commands", nargs="*")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
