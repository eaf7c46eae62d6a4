"""Conflicts resolve by policy and are recorded; no change is lost silently (T20-T31, T40-T43)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.sync.conftest import (
    ALICE,
    Client,
    ClientFactory,
    make_registry,
    server_rows,
)
from tests.integration.sync.models import Task
from underlay import Database, SQLAlchemyRepository
from underlay.sync import (
    ClientSchemaTooOldError,
    Conflict,
    Merge,
    Mutation,
    MutationIdReusedError,
    PushRequest,
    SyncRegistry,
    SyncServer,
)


class TaskRepository(SQLAlchemyRepository[Task]):
    pass


async def create(client: Client, **values: Any) -> uuid.UUID:
    async with client.db.session() as session:
        task = await TaskRepository(session).save(Task(owner_id=1, **values))
        return task.id


async def edit(client: Client, task_id: uuid.UUID, **values: Any) -> None:
    async with client.db.session() as session:
        await TaskRepository(session).update(task_id, values)


async def delete(client: Client, task_id: uuid.UUID) -> None:
    async with client.db.session() as session:
        await TaskRepository(session).delete(task_id)


async def shared_row(make_client: ClientFactory, **values: Any) -> tuple[Client, Client, uuid.UUID]:
    """Two clients of Alice that both hold one synced task."""
    a = await make_client("a")
    b = await make_client("b")
    task_id = await create(a, **values)
    await a.sync()
    await b.sync()
    return a, b, task_id


async def recorded_conflicts(database: Database) -> list[tuple[str, str, str]]:
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT kind, policy, resolution FROM underlay_sync_conflicts ORDER BY id")
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def converge(server_db: Database, *clients: Client) -> dict[Any, dict[str, Any]]:
    """Sync every client twice (I6) and check they all equal the server."""
    for _ in range(2):
        for client in clients:
            await client.sync()
    expected = await server_rows(server_db, ALICE)
    for client in clients:
        assert await client.rows() == expected
    return expected


class TestServerWins:
    async def test_concurrent_edits_keep_the_server_row_and_record_it(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T20: the second edit based on an old version loses; the client is told and reverts."""
        a, b, task_id = await shared_row(make_client, title="base")
        await edit(a, task_id, title="from a")
        await edit(b, task_id, note="from b")
        await a.sync()
        report = await b.sync()
        assert [r.conflict.resolution for r in report.conflicts if r.conflict] == ["kept_remote"]
        rows = await converge(server_db, a, b)
        assert (rows[task_id]["title"], rows[task_id]["note"]) == ("from a", None)
        assert await recorded_conflicts(server_db) == [
            ("update_update", "server_wins", "kept_remote")
        ]

    async def test_a_later_edit_after_a_lost_conflict_still_conflicts(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T42: an edit queued behind a kept_remote result keeps its old base and conflicts."""
        a, b, task_id = await shared_row(make_client, title="base")
        await edit(a, task_id, title="from a")
        await a.sync()
        await edit(b, task_id, title="b one")
        b.transport.fail_next("push", "hold")
        first = asyncio.create_task(b.client.sync())
        await b.transport.held.wait()
        await edit(b, task_id, title="b two")  # pending behind the in-flight one
        b.transport.release()
        await first
        await b.sync()
        assert [k for k, _, _ in await recorded_conflicts(server_db)] == [
            "update_update",
            "update_update",
        ]
        rows = await converge(server_db, a, b)
        assert rows[task_id]["title"] == "from a"

    async def test_two_clients_create_one_id(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T25/T43: a second create of the same id is a create_create conflict, not an error."""
        a = await make_client("a")
        b = await make_client("b")
        task_id = uuid.uuid4()
        async with a.db.session() as session:
            await TaskRepository(session).save(Task(id=task_id, owner_id=1, title="a's"))
        async with b.db.session() as session:
            await TaskRepository(session).save(Task(id=task_id, owner_id=1, title="b's"))
        await a.sync()
        report = await b.sync()
        assert [r.conflict.kind for r in report.conflicts if r.conflict] == ["create_create"]
        rows = await converge(server_db, a, b)
        assert rows[task_id]["title"] == "a's"


class TestClientWins:
    @pytest.fixture
    def registry(self) -> SyncRegistry:
        return make_registry(policy="client_wins")

    async def test_changed_columns_of_both_survive(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T20 (client_wins): field-level: the loser's changed columns apply over the winner."""
        a, b, task_id = await shared_row(make_client, title="base")
        await edit(a, task_id, title="from a")
        await edit(b, task_id, note="from b")
        await a.sync()
        await b.sync()
        rows = await converge(server_db, a, b)
        assert (rows[task_id]["title"], rows[task_id]["note"]) == ("from a", "from b")
        assert await recorded_conflicts(server_db) == [
            ("update_update", "client_wins", "kept_local")
        ]


def lww_mutation(mutation_id: int, task_id: uuid.UUID, title: str, hlc: str, base: int) -> Mutation:
    return Mutation(
        mutation_id=mutation_id,
        tx_group=mutation_id,
        table="sync_task",
        id=task_id,
        op="upsert",
        base_version=base,
        changed={"title": title} if base else {"title": title, "owner_id": 1},
        hlc=hlc,
        schema_version=1,
    )


class TestLastWriterWins:
    @pytest.fixture
    def registry(self) -> SyncRegistry:
        return make_registry(policy="lww")

    async def test_the_later_clock_wins_whatever_the_arrival_order(
        self, server: SyncServer, server_db: Database
    ) -> None:
        """T21 (lww): the change with the later HLC wins, also when it arrives first."""
        task_id, early, late = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await server.push(
            PushRequest(
                client_id=early,
                mutations=[lww_mutation(1, task_id, "v1", f"{10**12:015d}:00000:{early}", 0)],
            ),
            user=ALICE,
        )
        late_hlc = f"{10**12 + 2000:015d}:00000:{late}"
        early_hlc = f"{10**12 + 1000:015d}:00000:{early}"
        won = await server.push(
            PushRequest(client_id=late, mutations=[lww_mutation(1, task_id, "late", late_hlc, 1)]),
            user=ALICE,
        )
        lost = await server.push(
            PushRequest(
                client_id=early, mutations=[lww_mutation(2, task_id, "early", early_hlc, 1)]
            ),
            user=ALICE,
        )
        assert won.results[0].status == "applied"
        assert lost.results[0].conflict is not None
        assert lost.results[0].conflict.resolution == "kept_remote"
        assert (await server_rows(server_db, ALICE))[task_id]["title"] == "late"

    async def test_a_clock_a_year_ahead_is_clamped(
        self, server: SyncServer, server_db: Database
    ) -> None:
        """T35: a client clock a year ahead is clamped to now + skew; a later write still wins."""
        task_id, skewed, honest = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        year_ms = 365 * 24 * 3600 * 1000
        now_ms = int(__import__("time").time() * 1000)
        await server.push(
            PushRequest(
                client_id=skewed,
                mutations=[
                    lww_mutation(1, task_id, "skewed", f"{now_ms + year_ms:015d}:00000:{skewed}", 0)
                ],
            ),
            user=ALICE,
        )
        async with server_db.engine.connect() as conn:
            stored = (
                await conn.execute(text("SELECT hlc FROM sync_task WHERE id = :i"), {"i": task_id})
            ).scalar_one()
        assert int(stored.split(":")[0]) <= now_ms + 6 * 60 * 1000
        later = f"{now_ms + 10 * 60 * 1000:015d}:00000:{honest}"
        result = await server.push(
            PushRequest(client_id=honest, mutations=[lww_mutation(1, task_id, "honest", later, 1)]),
            user=ALICE,
        )
        assert result.results[0].status == "applied"


seen_conflicts: list[Conflict] = []


def merge_titles(conflict: Conflict) -> Merge:
    seen_conflicts.append(conflict)
    return Merge({"title": f"{conflict.remote['title']} + {conflict.changed['title']}"})


class TestMergeCallback:
    @pytest.fixture
    def registry(self) -> SyncRegistry:
        return make_registry(policy=merge_titles)

    async def test_the_callback_gets_base_local_and_remote(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T21 (merge): the callback sees the base, both sides, and its merge is applied."""
        seen_conflicts.clear()
        a, b, task_id = await shared_row(make_client, title="base")
        await edit(a, task_id, title="a")
        await edit(b, task_id, title="b")
        await a.sync()
        await b.sync()
        (conflict,) = seen_conflicts
        assert conflict.base == {"title": "base"}
        assert (conflict.remote["title"], conflict.local["title"]) == ("a", "b")
        rows = await converge(server_db, a, b)
        assert rows[task_id]["title"] == "a + b"


class TestDeletes:
    async def test_update_of_a_remotely_deleted_row_is_discarded(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T22 (delete_wins): an edit of a row deleted meanwhile loses; the row stays deleted."""
        a, b, task_id = await shared_row(make_client, title="base")
        await delete(a, task_id)
        await edit(b, task_id, title="edited")
        await a.sync()
        report = await b.sync()
        assert [r.conflict.kind for r in report.conflicts if r.conflict] == ["update_delete"]
        assert task_id not in await converge(server_db, a, b)

    async def test_delete_beats_a_concurrent_update(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T23 (delete_wins): a delete based on an old version still deletes."""
        a, b, task_id = await shared_row(make_client, title="base")
        await edit(a, task_id, title="edited")
        await delete(b, task_id)
        await a.sync()
        await b.sync()
        assert task_id not in await converge(server_db, a, b)

    async def test_both_delete(self, make_client: ClientFactory, server_db: Database) -> None:
        """T24: two deletes of one row: the second is a noop, not a conflict."""
        a, b, task_id = await shared_row(make_client, title="base")
        await delete(a, task_id)
        await delete(b, task_id)
        await a.sync()
        report = await b.sync()
        assert report.conflicts == []
        assert [r.status for r in report.rejected] == []
        assert task_id not in await converge(server_db, a, b)

    async def test_delete_then_restore_continues_the_version(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T26: a restored row keeps counting versions (no ABA)."""
        a, b, task_id = await shared_row(make_client, title="base")
        await delete(a, task_id)
        await a.sync()
        async with a.db.session() as session:
            await TaskRepository(session).restore(task_id)
        await a.sync()
        rows = await converge(server_db, a, b)
        assert task_id in rows
        async with server_db.engine.connect() as conn:
            version = (
                await conn.execute(
                    text("SELECT version FROM sync_task WHERE id = :i"), {"i": task_id}
                )
            ).scalar_one()
        assert version == 3


class TestUpdateWins:
    @pytest.fixture
    def registry(self) -> SyncRegistry:
        return make_registry(deletes="update_wins")

    async def test_update_brings_a_deleted_row_back(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T22 (update_wins): the edit resurrects the row as a new version."""
        a, b, task_id = await shared_row(make_client, title="base")
        await delete(a, task_id)
        await edit(b, task_id, title="edited")
        await a.sync()
        await b.sync()
        rows = await converge(server_db, a, b)
        assert rows[task_id]["title"] == "edited"

    async def test_a_concurrent_update_beats_the_delete(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T23 (update_wins): a delete based on an old version loses to the update."""
        a, b, task_id = await shared_row(make_client, title="base")
        await edit(a, task_id, title="edited")
        await delete(b, task_id)
        await a.sync()
        await b.sync()
        rows = await converge(server_db, a, b)
        assert rows[task_id]["title"] == "edited"


class TestOwnChanges:
    async def test_edits_in_two_batches_never_conflict_with_themselves(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T27/T30: successive pushes of one client rebase on their own results; echoes skip."""
        a, b, task_id = await shared_row(make_client, title="base")
        await edit(a, task_id, title="one")
        first = await a.sync()
        await edit(a, task_id, title="two")
        second = await a.sync()
        assert first.conflicts == second.conflicts == []
        assert second.pulled == 0  # its own change comes back from the pull: skipped
        assert (await converge(server_db, a, b))[task_id]["title"] == "two"

    async def test_edit_made_while_the_previous_one_is_in_flight(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T28: an edit during a push becomes a new entry, based on the pushed result."""
        a, b, task_id = await shared_row(make_client, title="base")
        await edit(a, task_id, title="one")
        a.transport.fail_next("push", "hold")
        running = asyncio.create_task(a.client.sync())
        await a.transport.held.wait()
        await edit(a, task_id, title="two")
        a.transport.release()
        report = await running
        assert (report.pushed, report.conflicts) == (2, [])  # two entries, no self-conflict
        assert (await converge(server_db, a, b))[task_id]["title"] == "two"
        async with server_db.engine.connect() as conn:
            version = (
                await conn.execute(
                    text("SELECT version FROM sync_task WHERE id = :i"), {"i": task_id}
                )
            ).scalar_one()
        assert version == 3

    async def test_rejected_change_is_reverted_and_the_queue_moves_on(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T31: a mutation outside the user's scope is rejected and reverted; others apply."""
        a = await make_client("a")
        bad = await create(a, title="not mine")
        async with a.db.session() as session:
            await TaskRepository(session).update(bad, {"title": "still not mine"})
            session.add(Task(owner_id=2, title="for bob"))  # Alice may not create Bob's rows
        good = await create(a, title="mine")
        report = await a.sync()
        assert len(report.rejected) == 1
        assert "scope" in (report.rejected[0].error or "")
        rows = await a.rows()
        assert set(rows) == {bad, good}
        assert rows == await server_rows(server_db, ALICE)


class TestProtocolErrors:
    async def test_client_below_min_schema_keeps_its_outbox(
        self, make_client: ClientFactory, server: SyncServer
    ) -> None:
        """T40: a client older than min_client_schema is refused and keeps its changes."""
        a = await make_client("a")
        await create(a, title="t")
        server.min_client_schema = 2
        with pytest.raises(ClientSchemaTooOldError):
            await a.sync()
        assert await a.client.pending_count() == 1

    async def test_reused_mutation_id_is_refused(self, server: SyncServer) -> None:
        """T41: a known mutation id with other content means lost local commits: refused."""
        client_id, task_id = uuid.uuid4(), uuid.uuid4()
        first = lww_mutation(1, task_id, "first", "", 0)
        await server.push(PushRequest(client_id=client_id, mutations=[first]), user=ALICE)
        reused = lww_mutation(1, uuid.uuid4(), "other", "", 0)
        with pytest.raises(MutationIdReusedError):
            await server.push(PushRequest(client_id=client_id, mutations=[reused]), user=ALICE)
