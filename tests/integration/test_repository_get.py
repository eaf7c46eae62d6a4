"""`SQLAlchemyRepository.get` reads with one statement per class and answers as `Session.get`.

The repository keeps one primary-key SELECT per mapped class (marked reusable, so the
session hooks add their criteria as memoized variants) instead of letting `Session.get`
build one per call. These tests pin the answers to the ones `Session.get` gives: the
identity map, soft-deleted rows, composite keys, classes whose relationships load by join,
expired objects, and that every call really reaches the database through the same
statement objects.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import ForeignKey, MetaData, String, event, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tests.integration.models import new_base
from underlay import Database, SoftDeleteMixin, SQLAlchemyRepository
from underlay.models._soft_delete import _LIVE_ROWS
from underlay.models._statements import REUSABLE, with_option

GetBase = new_base()


class Shelf(SoftDeleteMixin, GetBase):
    __tablename__ = "get_shelves"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    # loaded by join: the repository leaves these to Session.get, which de-duplicates
    slots: Mapped[list[Slot]] = relationship(lazy="joined", order_by="Slot.position")


class Slot(GetBase):
    __tablename__ = "get_slots"

    shelf_id: Mapped[int] = mapped_column(ForeignKey("get_shelves.id"), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(50))


class Box(SoftDeleteMixin, GetBase):
    __tablename__ = "get_boxes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class ShelfRepository(SQLAlchemyRepository[Shelf]):
    pass


class SlotRepository(SQLAlchemyRepository[Slot]):
    pass


class BoxRepository(SQLAlchemyRepository[Box]):
    pass


@pytest.fixture
def metadata() -> MetaData:
    return GetBase.metadata


@pytest.fixture
async def filled(db: Database) -> Database:
    async with db.session() as session:
        session.add_all([Box(id=i, name=f"box {i}") for i in range(1, 6)])
        session.add(Shelf(id=1, name="top"))
        session.add_all([Slot(shelf_id=1, position=p, label=f"slot {p}") for p in (1, 2, 3)])
    async with db.session() as session:
        await BoxRepository(session).delete(5)  # soft
    return db


class _Executed:
    """The ORM statements a session executes, after every hook has run, and the SQL sent."""

    def __init__(self) -> None:
        self.statements: list[Any] = []
        self.sql: list[str] = []

    def attach(self, session: Any) -> None:
        sync = session.sync_session
        event.listen(sync, "do_orm_execute", self._statement)
        event.listen(sync.bind, "before_cursor_execute", self._sql)

    def detach(self, session: Any) -> None:
        event.remove(session.sync_session.bind, "before_cursor_execute", self._sql)

    def _statement(self, state: Any) -> None:
        self.statements.append(state.statement)

    def _sql(self, *args: Any) -> None:
        self.sql.append(args[2])


class TestAnswers:
    async def test_each_call_reads_the_row(self, filled: Database) -> None:
        """Rows not in the session are read from the database, each call with one SELECT."""
        async with filled.session(readonly=True) as session:
            executed = _Executed()
            executed.attach(session)
            try:
                boxes = BoxRepository(session)
                assert [(await boxes.get(i)).name for i in (1, 2, 3)] == [  # type: ignore[union-attr]
                    "box 1",
                    "box 2",
                    "box 3",
                ]
                assert await boxes.get(42) is None
            finally:
                executed.detach(session)
        assert len(executed.sql) == 4
        assert all("get_boxes" in sql and "deleted_at IS NULL" in sql for sql in executed.sql)

    async def test_identity_map_answers_without_sql(self, filled: Database) -> None:
        async with filled.session() as session:
            boxes = BoxRepository(session)
            first = await boxes.get(1)
            executed = _Executed()
            executed.attach(session)
            try:
                assert await boxes.get(1) is first
                assert await boxes.get("1") is first  # the canonical key, same entry
            finally:
                executed.detach(session)
            assert executed.sql == []

    async def test_soft_deleted_row(self, filled: Database) -> None:
        async with filled.session() as session:
            boxes = BoxRepository(session)
            assert await boxes.get(5) is None
            deleted = await boxes.get(5, include_deleted=True)
            assert deleted is not None
            assert deleted.deleted_at is not None

    async def test_soft_deleted_in_this_session(self, filled: Database) -> None:
        """A row deleted earlier in the session is gone, from the map and from the database."""
        async with filled.session() as session:
            boxes = BoxRepository(session)
            await boxes.delete(2)
            assert await boxes.get(2) is None
            session.expunge_all()
            assert await boxes.get(2) is None

    async def test_expired_object_is_refreshed(self, filled: Database) -> None:
        async with filled.session() as session:
            boxes = BoxRepository(session)
            box = await boxes.get(3)
            assert box is not None
            await session.execute(
                Box.__table__.update().where(Box.__table__.c.id == 3).values(name="renamed")
            )
            session.expire(box)
            again = await boxes.get(3)
            assert again is box
            assert again.name == "renamed"

    async def test_composite_key(self, filled: Database) -> None:
        async with filled.session(readonly=True) as session:
            slots = SlotRepository(session)
            slot = await slots.get((1, 2))
            assert slot is not None
            assert slot.label == "slot 2"
            assert await slots.get({"shelf_id": 1, "position": 3}) is not None
            assert await slots.get((1, 9)) is None

    async def test_joined_relationship(self, filled: Database) -> None:
        """A class whose relationship loads by join still gets one entity with all children."""
        async with filled.session(readonly=True) as session:
            shelf = await ShelfRepository(session).get(1)
            assert shelf is not None
            assert [slot.position for slot in shelf.slots] == [1, 2, 3]

    async def test_same_as_session_get(self, filled: Database) -> None:
        """For every id, live, deleted and missing, the answer is Session.get's."""
        for i in range(7):
            async with filled.session(readonly=True) as session:
                ours = await BoxRepository(session).get(i)
            async with filled.session(readonly=True) as session:
                theirs = await session.get(Box, i)
            assert (ours and ours.name) == (theirs and theirs.name)


class TestStatementReuse:
    async def test_hooks_hand_out_one_statement(self, filled: Database) -> None:
        """Every get of a class executes the same statement object once the hooks have run.

        The same object keeps the cache key SQLAlchemy computed for it the first time.
        """
        async with filled.session(readonly=True) as session:
            executed = _Executed()
            executed.attach(session)
            try:
                boxes = BoxRepository(session)
                for i in (1, 2, 3, 4):
                    await boxes.get(i)
            finally:
                executed.detach(session)
        assert len(executed.statements) == 4
        assert len({id(statement) for statement in executed.statements}) == 1

    def test_with_option_memoizes_reusable_statements_only(self) -> None:
        statement = select(Box)
        first = with_option(statement, _LIVE_ROWS, {REUSABLE: True})
        assert _LIVE_ROWS in first._with_options
        assert with_option(statement, _LIVE_ROWS, {REUSABLE: True}) is first
        # not marked: a new statement each time, as Select.options gives
        assert with_option(statement, _LIVE_ROWS, {}) is not with_option(statement, _LIVE_ROWS, {})
