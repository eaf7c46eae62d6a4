"""insert_many across batches: the checked fast path, and COPY streamed over batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import MetaData, String, event, func, insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from tests.conftest import Backend
from tests.integration.models import new_base
from underlay import Database, DuplicateError, InvalidQueryError, SQLAlchemyRepository
from underlay.repository import _insert

BatchBase = new_base()


class Part(BatchBase):
    """Plain columns, one stored under another name, and constant Python defaults."""

    __tablename__ = "parts"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    label: Mapped[str] = mapped_column("label_text", String(20), default="-")
    qty: Mapped[int | None] = mapped_column(default=0)


class PartRepository(SQLAlchemyRepository[Part]):
    pass


@pytest.fixture
def metadata() -> MetaData:
    return BatchBase.metadata


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the rows of each COPY asyncpg runs (the real COPY still runs)."""
    sizes: list[int] = []
    original = asyncpg.Connection.copy_records_to_table

    async def counting(self: Any, table_name: str, *, records: Any, **kwargs: Any) -> Any:
        rows = list(records)
        sizes.append(len(rows))
        return await original(self, table_name, records=rows, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "copy_records_to_table", counting)
    return sizes


def _parts(count: int, *, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": i, "code": f"p{i:05d}", **extra} for i in range(start, start + count)]


async def _stored(db: Database) -> list[tuple[int, str, str, int | None]]:
    async with db.session() as session:
        result = await session.execute(
            select(Part.id, Part.code, Part.label, Part.qty).order_by(Part.id)
        )
        return [tuple(row) for row in result.all()]  # type: ignore[misc]  # four columns


class TestCheckedFastPath:
    async def test_constant_defaults_appended(self, db: Database) -> None:
        """Rows with the same keys get the left-out columns' constant defaults."""
        async with db.session() as session:
            assert await PartRepository(session).insert_many(_parts(1200)) == 1200
        stored = await _stored(db)
        assert stored == [(i, f"p{i:05d}", "-", 0) for i in range(1200)]

    async def test_nulls_and_converted_values(self, db: Database) -> None:
        """NULLs keep the fast check; a value to convert ("7" for an int) is converted."""
        rows = _parts(1200, label="x", qty=None)
        rows[5]["qty"] = 3
        rows[700]["qty"] = "7"
        async with db.session() as session:
            await PartRepository(session).insert_many(rows)
        stored = await _stored(db)
        assert stored[5][3] == 3
        assert stored[700][3] == 7
        assert sum(1 for row in stored if row[3] is None) == 1198

    async def test_same_size_other_keys(self, db: Database) -> None:
        """A row with as many keys as the first but other ones is not read as the first's."""
        rows = _parts(1200, label="x")
        rows[900] = {"id": 900, "code": "p00900", "qty": 5}
        async with db.session() as session:
            await PartRepository(session).insert_many(rows)
        stored = await _stored(db)
        assert stored[900] == (900, "p00900", "-", 5)
        assert stored[899] == (899, "p00899", "x", 0)

    async def test_bad_value_refused_before_sql(self, db: Database) -> None:
        """A value that fits no column is refused by name; nothing is written."""
        rows = _parts(1200, qty=1)
        rows[1100]["qty"] = 2**40
        async with db.session() as session:
            with pytest.raises(InvalidQueryError, match=r"Part\.qty"):
                await PartRepository(session).insert_many(rows)
        assert await _stored(db) == []


def _postgres_only(backend: Backend) -> None:
    if not backend.is_postgres:
        pytest.skip("COPY is PostgreSQL's")


class _BoomError(Exception):
    """Raised by a row generator part-way through."""


class TestStreamedCopy:
    async def test_batches_with_the_same_keys_share_one_copy(
        self, db: Database, backend: Backend, copies: list[int]
    ) -> None:
        """Five batches of the same keys are one COPY of every row, in order."""
        _postgres_only(backend)
        async with db.session() as session:
            count = await PartRepository(session).insert_many(
                iter(_parts(4500, qty=2)), batch_size=1000
            )
        assert count == 4500
        assert copies == [4500]
        assert await _stored(db) == [(i, f"p{i:05d}", "-", 2) for i in range(4500)]

    async def test_other_keys_start_a_new_copy(
        self, db: Database, backend: Backend, copies: list[int]
    ) -> None:
        """A batch with other keys, or with several key sets, ends the COPY before it."""
        rows = [
            *_parts(2000, qty=1),
            *_parts(1000, start=2000, label="b"),
            *_parts(500, start=3000, qty=3),
            *_parts(500, start=3500, label="c"),
            *_parts(1000, start=4000, qty=4),
        ]
        async with db.session() as session:
            await PartRepository(session).insert_many(rows, batch_size=1000)
        # batches: qty, qty | label | qty and label (two key sets, a COPY each) | qty
        assert copies == ([2000, 1000, 500, 500, 1000] if backend.is_postgres else [])
        stored = await _stored(db)
        assert [row[0] for row in stored] == list(range(5000))
        assert stored[1999][2:] == ("-", 1)
        assert stored[2000][2:] == ("b", 0)
        assert stored[3499][2:] == ("-", 3)
        assert stored[3500][2:] == ("c", 0)
        assert stored[4999][2:] == ("-", 4)

    async def test_a_copy_streams_at_most_copy_stream_rows(
        self, db: Database, backend: Backend, copies: list[int], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past COPY_STREAM_ROWS the next batch goes in a new COPY."""
        _postgres_only(backend)
        monkeypatch.setattr(_insert, "COPY_STREAM_ROWS", 2000)
        async with db.session() as session:
            await PartRepository(session).insert_many(iter(_parts(5500)), batch_size=1000)
        assert copies == [2000, 2000, 1500]
        assert len(await _stored(db)) == 5500

    async def test_generator_raising_while_streaming(self, db: Database, backend: Backend) -> None:
        """A row iterator raising mid-COPY undoes the call; the session goes on working."""
        _postgres_only(backend)

        def rows() -> Iterator[dict[str, Any]]:
            yield from _parts(2500)
            raise _BoomError

        async with db.session() as session:
            repo = PartRepository(session)
            await repo.insert_many([{"id": 90000, "code": "kept"}])
            with pytest.raises(_BoomError):
                await repo.insert_many(rows(), batch_size=1000)
            await repo.insert_many(_parts(1000, start=50000))
        assert len(await _stored(db)) == 1001

    async def test_bad_value_in_a_streamed_batch(self, db: Database, backend: Backend) -> None:
        """A refused value in batch 3 undoes batches 1 and 2 of the same COPY."""
        _postgres_only(backend)
        rows = _parts(3000, qty=1)
        rows[2500]["qty"] = "many"
        async with db.session() as session:
            repo = PartRepository(session)
            with pytest.raises(InvalidQueryError, match=r"Part\.qty"):
                await repo.insert_many(iter(rows), batch_size=1000)
            assert await repo.count() == 0

    async def test_duplicate_in_a_streamed_batch(self, db: Database, backend: Backend) -> None:
        """The server's refusal of a row in batch 2 undoes the whole call."""
        _postgres_only(backend)
        rows = _parts(2000)
        rows[1500]["code"] = rows[10]["code"]
        async with db.session() as session:
            repo = PartRepository(session)
            await repo.insert_many([{"id": 90000, "code": "kept"}])
            with pytest.raises(DuplicateError):
                await repo.insert_many(iter(rows), batch_size=1000)
            await repo.insert_many([{"id": 90001, "code": "after"}])
        assert [row[1] for row in await _stored(db)] == ["kept", "after"]


class TestAllOrNothing:
    """A failed call leaves the session as it was: a savepoint, or a rollback if untouched."""

    @staticmethod
    def _savepoints(db: Database) -> list[str]:
        sent: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
                sent.append(statement.split(maxsplit=1)[0].upper())

        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        return sent

    async def test_untouched_session_needs_no_savepoint(self, db: Database) -> None:
        """First in its session, a call sends no savepoint; after other work it does."""
        sent = self._savepoints(db)
        async with db.session() as session:
            await PartRepository(session).insert_many(_parts(1500))
        assert sent == []
        async with db.session() as session:
            repo = PartRepository(session)
            assert await repo.count() == 1500
            await repo.insert_many(_parts(1500, start=5000))
        assert sent == ["SAVEPOINT", "RELEASE"]

    async def test_failure_in_an_untouched_session(self, db: Database) -> None:
        """A refused row rolls the untouched session back; it goes on working after."""
        rows = _parts(2500)
        rows[2200]["code"] = rows[3]["code"]
        async with db.session() as session:
            repo = PartRepository(session)
            with pytest.raises(DuplicateError):
                await repo.insert_many(iter(rows), batch_size=1000)
            assert not session.in_transaction()
            assert await repo.count() == 0
            await repo.insert_many(_parts(10, start=9000))
        assert [row[0] for row in await _stored(db)] == list(range(9000, 9010))

    async def test_loaded_objects_survive_a_failure(self, db: Database) -> None:
        """Objects a session holds are not expired by a failed call (savepoint path)."""
        async with db.session() as session:
            await PartRepository(session).insert_many(_parts(3, label="kept"))
        async with db.session() as session:
            repo = PartRepository(session)
            part = await repo.get(1)
            await session.commit()  # no transaction under way, but an object held
            with pytest.raises(DuplicateError):
                await repo.insert_many(_parts(1500))
            assert not inspect(part).expired
            assert part.label == "kept"
            assert await repo.count() == 3

    async def test_session_on_a_callers_connection_keeps_the_callers_work(
        self, db: Database
    ) -> None:
        """A session bound to a connection in a transaction fails back to its savepoint."""
        async with db.engine.connect() as connection:
            await connection.begin()
            await connection.execute(insert(Part).values(id=1, code="outer"))
            session = AsyncSession(bind=connection)
            rows = _parts(1500, start=2)
            rows[700]["code"] = "outer"
            with pytest.raises(DuplicateError):
                await PartRepository(session).insert_many(rows)
            await session.close()
            count = await connection.scalar(select(func.count()).select_from(Part))
            assert count == 1
            await connection.commit()
        assert [row[1] for row in await _stored(db)] == ["outer"]
