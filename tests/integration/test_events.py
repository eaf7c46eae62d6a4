"""The transaction-events seam: observers hear what committed transactions wrote."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import delete, insert, select, update

from tests.integration.models import User
from underlay import Database, record_write
from underlay.events import TransactionWrites, Write, transaction_writes
from underlay.testing import record_transactions


def _summary(writes: list[Write]) -> list[tuple[object, object, str]]:
    return [(w.model, w.ids, w.kind) for w in writes]


class TestWhatObserversHear:
    async def test_orm_insert_update_delete(self, db: Database) -> None:
        """Each flushed change is reported with its model, primary key and kind."""
        with record_transactions(db) as log:
            async with db.session() as session:
                user = User(email="a@example.com")
                session.add(user)
            async with db.session() as session:
                stored = await session.get(User, user.id)
                assert stored is not None
                stored.name = "Ada"
            async with db.session() as session:
                await session.delete(await session.get(User, user.id))
        assert [_summary(list(writes)) for writes in log.committed] == [
            [(User, ((user.id,),), "insert")],
            [(User, ((user.id,),), "update")],
            [(User, ((user.id,),), "delete")],
        ]
        assert log.rolled_back == []

    async def test_core_dml_with_known_and_unknown_rows(self, db: Database) -> None:
        """UPDATE / DELETE by primary key carry the ids; other statements mean any row."""
        with record_transactions(db) as log:
            async with db.session() as session:
                await session.execute(insert(User), [{"email": "a@x.io"}, {"email": "b@x.io"}])
                await session.execute(update(User).where(User.id == 1).values(name="one"))
                await session.execute(update(User).where(User.name == "").values(name="many"))
                await session.execute(delete(User).where(User.id.in_([1, 2])))
        assert _summary(log.writes) == [
            (User, None, "insert"),
            (User, (1,), "update"),
            (User, None, "update"),
            (User, (1, 2), "delete"),
        ]

    async def test_reads_are_not_reported(self, db: Database) -> None:
        """A transaction that only read commits without notifying anyone."""
        with record_transactions(db) as log:
            async with db.session() as session:
                await session.execute(select(User))
                assert transaction_writes(session) is None
        assert log.committed == []
        assert log.rolled_back == []

    async def test_record_write_reports_raw_writes(self, db: Database) -> None:
        """Writes the ORM cannot see are reported once recorded by hand."""
        with record_transactions(db) as log:
            async with db.session() as session:
                record_write(session, User, ids=[7])
                record_write(session, User)
        assert _summary(log.writes) == [(User, (7,), "write"), (User, None, "write")]

    async def test_record_write_without_observers_tracks_nothing(self, db: Database) -> None:
        async with db.session() as session:
            record_write(session, User, ids=[7])
            assert transaction_writes(session) is None


class TestOutcomes:
    async def test_rollback_is_reported_and_not_committed(self, db: Database) -> None:
        with record_transactions(db) as log, pytest.raises(RuntimeError, match="boom"):
            async with db.session() as session:
                session.add(User(email="a@example.com"))
                await session.flush()
                raise RuntimeError("boom")
        assert log.committed == []
        assert [_summary(list(writes))[0][2] for writes in log.rolled_back] == ["insert"]

    async def test_rolled_back_savepoint_is_dropped(self, db: Database) -> None:
        """Only the writes of savepoints that were released reach the commit."""
        with record_transactions(db) as log:
            async with db.session() as session:
                kept = User(email="kept@example.com")
                session.add(kept)
                await session.flush()
                savepoint = await session.begin_nested()
                session.add(User(email="dropped@example.com"))
                await session.flush()
                await savepoint.rollback()
                async with session.begin_nested():
                    released = User(email="released@example.com")
                    session.add(released)
        assert _summary(log.writes) == [
            (User, ((kept.id,),), "insert"),
            (User, ((released.id,),), "insert"),
        ]

    async def test_each_transaction_is_reported_on_its_own(self, db: Database) -> None:
        """A session that commits twice reports two transactions."""
        with record_transactions(db) as log:
            async with db.session() as session:
                session.add(User(email="a@example.com"))
                await session.commit()
                session.add(User(email="b@example.com"))
        assert [len(writes) for writes in log.committed] == [1, 1]


class _Failing:
    def __init__(self) -> None:
        self.calls = 0

    async def after_commit(self, writes: TransactionWrites) -> None:
        self.calls += 1
        raise RuntimeError("observer broke")

    def after_rollback(self, writes: TransactionWrites) -> None:
        self.calls += 1
        raise RuntimeError("observer broke")


class TestSubscription:
    async def test_failing_observer_neither_fails_commit_nor_starves_others(
        self, db: Database, caplog: pytest.LogCaptureFixture
    ) -> None:
        failing = _Failing()
        unsubscribe = db.subscribe(failing)
        try:
            with record_transactions(db) as log, caplog.at_level(logging.ERROR):
                async with db.session() as session:
                    session.add(User(email="a@example.com"))
        finally:
            unsubscribe()
        assert failing.calls == 1
        assert len(log.committed) == 1
        assert "failed after commit" in caplog.text
        async with db.session() as session:
            assert (await session.scalars(select(User.email))).all() == ["a@example.com"]

    async def test_unsubscribe_stops_tracking(self, db: Database) -> None:
        with record_transactions(db) as log:
            pass
        async with db.session() as session:
            session.add(User(email="a@example.com"))
            await session.flush()
            assert transaction_writes(session) is None
        assert log.committed == []

    async def test_observers_of_one_database_do_not_hear_another(
        self, db: Database, tmp_path: object
    ) -> None:
        other = Database(f"sqlite+aiosqlite:///{tmp_path}/other.db")
        try:
            await other.create_all(User.metadata)
            with record_transactions(db) as log:
                async with other.session() as session:
                    session.add(User(email="elsewhere@example.com"))
            assert log.committed == []
        finally:
            await other.dispose()

    def test_subscribe_refuses_what_is_not_an_observer(self, db: Database) -> None:
        with pytest.raises(TypeError, match="TransactionObserver"):
            db.subscribe(object())  # type: ignore[arg-type]
