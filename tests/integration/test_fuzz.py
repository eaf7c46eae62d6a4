"""Hostile values thrown at every public repository and cache method, from a seeded generator.

Asserts two things for each of 10,000+ calls per backend: only documented underlay errors
escape, and a call refused with `InvalidQueryError` sent no SQL (counted with an engine
``before_cursor_execute`` listener). Set ``UNDERLAY_FUZZ_SEED`` to replay another run and
``UNDERLAY_FUZZ_CALLS`` for a longer one.
"""

from __future__ import annotations

import enum
import os
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import Enum, MetaData, Numeric, String, event
from sqlalchemy.orm import Mapped, mapped_column

from tests.integration.models import new_base
from underlay import (
    ConflictError,
    ConstraintError,
    Database,
    InMemoryRepository,
    InvalidQueryError,
    MultipleResultsError,
    NotFoundError,
    SoftDeleteMixin,
    SQLAlchemyRepository,
    UnderlayError,
    VersionedMixin,
)
from underlay.cache import CachedRepository, MemoryCache

SEED = int(os.environ.get("UNDERLAY_FUZZ_SEED", "20261129"))
CALLS = int(os.environ.get("UNDERLAY_FUZZ_CALLS", "10000"))

#: What a call may raise: the documented errors (ConflictError covers duplicates, stale
#: versions, foreign keys and serialization failures).
DOCUMENTED = (
    InvalidQueryError,
    NotFoundError,
    MultipleResultsError,
    ConflictError,
    ConstraintError,
)

FuzzBase = new_base()


class Mood(enum.Enum):
    HAPPY = "h"
    SAD = "s"


class Thing(SoftDeleteMixin, VersionedMixin, FuzzBase):
    __tablename__ = "fuzz_things"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    count: Mapped[int] = mapped_column(default=0)
    ratio: Mapped[float] = mapped_column(default=0.0)
    price: Mapped[Decimal] = mapped_column(Numeric(8, 2), default=Decimal(0))
    flag: Mapped[bool] = mapped_column(default=False)
    mood: Mapped[Mood] = mapped_column(Enum(Mood), default=Mood.HAPPY)
    day: Mapped[date | None] = mapped_column(default=None)
    seen: Mapped[datetime | None] = mapped_column(default=None)
    token: Mapped[uuid.UUID | None] = mapped_column(default=None)


class ThingRepository(SQLAlchemyRepository[Thing]):
    sortable_fields = ("code", "count", "price")
    filterable_fields = ("code", "count", "ratio", "price", "flag", "mood", "day", "seen")
    filterable_fields += ("token",)


class ThingOut(BaseModel):
    id: int
    code: str
    count: int


class ThingIn(BaseModel):
    code: Any = None
    count: Any = None


FIELDS = ["id", "code", "count", "ratio", "price", "flag", "mood", "day", "seen", "token"]


class Hostile:
    """A seeded source of values a careless caller or an attacker might pass."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def value(self) -> Any:  # noqa: PLR0912 - one branch per kind of value
        rng = self.rng
        kind = rng.randrange(24)
        if kind == 0:
            return rng.choice([0, 1, -1, 2, 3, 7])  # plausible ids and counts
        if kind == 1:
            return rng.choice([2**15, 2**31, -(2**31) - 1, 2**63, 10**30, -(10**19)])
        if kind == 2:
            return rng.choice([True, False])
        if kind == 3:
            return rng.choice([1.0, 1.5, -0.0, float("nan"), float("inf"), 1e308, 5e-324])
        if kind == 4:
            return rng.choice([Decimal("1.5"), Decimal("NaN"), Decimal("1e40"), Decimal("-1")])
        if kind == 5:
            return rng.choice(["1", "01", " 1", "+2", "1e0", "0x1", "\u0661", "", "-", "nan"])
        if kind == 6:
            return rng.choice(["a", "code-1", "x" * 13, "x" * 100_000, "true", "HAPPY", "h"])
        if kind == 7:
            return rng.choice(["a\x00b", "\udc80", "\ud800x", "e\u0301", "\U0001f600", "%_\\"])
        if kind == 8:
            return rng.choice([None, (), [], {}, set(), frozenset()])
        if kind == 9:
            return rng.choice([(1,), (1, 2), [1], ("1",), (None,), ((1,),)])
        if kind == 10:
            return rng.choice([{"id": 1}, {"x": 1}, {"id": [1]}, {1: 2}])
        if kind == 11:
            return rng.choice([b"1", bytearray(b"x"), memoryview(b"ab")])
        if kind == 12:
            return rng.choice([uuid.UUID(int=rng.getrandbits(128)), "not-a-uuid", uuid.uuid4().hex])
        if kind == 13:
            return rng.choice(
                [
                    datetime(2024, 1, 1, tzinfo=UTC),
                    datetime(2024, 1, 1),
                    "2024-01-01T00:00:00+02:00",
                    "2024-13-01",
                ]
            )
        if kind == 14:
            return rng.choice([date(2024, 2, 29), "2024-02-30", timedelta(days=1)])
        if kind == 15:
            return rng.choice([Mood.HAPPY, Mood.SAD, "SAD", "s", "angry"])
        if kind == 16:
            return rng.choice([object(), Thing, print, ..., NotImplemented, type])
        if kind == 17:
            return rng.choice([ThingIn(code="fuzz"), ThingIn(), ThingOut(id=1, code="a", count=1)])
        if kind == 18:
            return rng.choice(["code", "-count", "count,code", "id", "__class__", "a b", ",,"])
        if kind == 19:
            return rng.choice(["drop table fuzz_things", "'; --", "1 OR 1=1", "\n"])
        if kind == 20:
            return rng.randrange(-5, 2000)
        if kind == 21:
            return [self.small() for _ in range(rng.randrange(4))]
        if kind == 22:
            return {self.field(): self.small() for _ in range(rng.randrange(4))}
        return self.small()

    def small(self) -> Any:
        rng = self.rng
        return rng.choice(
            [1, 2, "1", "a", None, 1.5, True, "x" * 20, "\x00", Decimal("2.50"), Mood.SAD]
        )

    def field(self) -> Any:
        rng = self.rng
        if rng.random() < 0.8:
            return rng.choice(FIELDS)
        return rng.choice(["version", "deleted_at", "nope", "__dict__", 5, "code ", ""])

    def row(self) -> Any:
        rng = self.rng
        if rng.random() < 0.1:
            return self.value()
        row: dict[Any, Any] = {}
        if rng.random() < 0.7:
            row["code"] = rng.choice([f"c{rng.randrange(40)}", self.value()])
        for _ in range(rng.randrange(3)):
            row[self.field()] = self.value()
        return row

    def rows(self) -> Any:
        rng = self.rng
        if rng.random() < 0.1:
            return self.value()
        return [self.row() for _ in range(rng.randrange(4))]

    def filters(self) -> Any:
        rng = self.rng
        if rng.random() < 0.1:
            return self.value()
        return {self.field(): self.value() for _ in range(rng.randrange(1, 3))}

    def size(self) -> Any:
        return self.rng.choice([self.value(), self.rng.randrange(-2, 60)])


def calls(
    hostile: Hostile, repository: Any, cached: Any, memory: Any
) -> list[tuple[str, Callable[[], Any]]]:
    """Every public method of the repositories and the cache, with hostile arguments."""
    h, r, c, m = hostile, repository, cached, memory
    v = h.value
    return [
        ("get", lambda: r.get(v())),
        ("get_one", lambda: r.get_one(v())),
        ("one_or_none", lambda: r.one_or_none(filter_by=h.filters())),
        ("list_all", lambda: r.list_all(filter_by=h.filters(), order_by=v(), limit=h.size())),
        ("list_all.offset", lambda: r.list_all(offset=h.size(), limit=h.size())),
        ("count", lambda: r.count(filter_by=h.filters())),
        ("exists", lambda: r.exists(filter_by=h.filters())),
        ("page", lambda: r.page(number=h.size(), size=h.size(), order_by=v(), count=v())),
        ("paginate", lambda: r.paginate(limit=h.size(), after=v(), order_by=v())),
        ("select_statement", lambda: _sync(r.select_statement, filter_by=h.filters())),
        ("count_statement", lambda: _sync(r.count_statement, filter_by=h.filters())),
        ("update", lambda: r.update(v(), h.row(), expected_version=h.size())),
        ("upsert", lambda: r.upsert(h.row(), conflict_on=v())),
        ("upsert.code", lambda: r.upsert(h.row(), conflict_on=["code"])),
        ("upsert_many", lambda: r.upsert_many(h.rows(), conflict_on=["code"])),
        ("insert_many", lambda: r.insert_many(h.rows())),
        ("insert_many.method", lambda: r.insert_many(h.rows(), method=v())),
        ("save", lambda: r.save(ThingIn(code=v(), count=v()))),
        ("delete", lambda: r.delete(v())),
        ("hard_delete", lambda: r.hard_delete(v())),
        ("restore", lambda: r.restore(v())),
        ("cache.get", lambda: c.get(v())),
        ("cache.get_one", lambda: c.get_one(v())),
        ("cache.get_many", lambda: c.get_many(h.rng.choice([[v(), v()], v()]))),
        ("cache.list_all", lambda: c.list_all(filter_by=h.filters(), limit=h.size())),
        ("cache.invalidate", lambda: c.invalidate(v())),
        ("memory.get", lambda: m.get(v())),
        ("memory.get_one", lambda: m.get_one(v())),
        ("memory.list_all", lambda: m.list_all(order_by=v(), limit=h.size(), offset=h.size())),
        ("memory.update", lambda: m.update(v(), h.row())),
        ("memory.delete", lambda: m.delete(v())),
        ("memory.restore", lambda: m.restore(v())),
    ]


async def _sync(function: Callable[..., Any], **kwargs: Any) -> Any:
    return function(**kwargs)


@pytest.fixture
def metadata() -> MetaData:
    return FuzzBase.metadata


class TestFuzz:
    async def test_only_documented_errors_and_no_sql_when_refused(self, db: Database) -> None:
        """10,000 hostile calls: documented errors only; refused calls send no statement."""
        sent: list[str] = []

        def count(*args: Any) -> None:
            sent.append(args[2])

        event.listen(db.engine.sync_engine, "before_cursor_execute", count)
        hostile = Hostile(SEED)
        cache = MemoryCache()
        memory = InMemoryRepository(Thing, [Thing(id=i, code=f"m{i}") for i in range(1, 4)])
        async with db.session() as session:
            await ThingRepository(session).insert_many(
                [{"id": i, "code": f"c{i}", "count": i} for i in range(1, 21)]
            )
        leaks: list[str] = []
        refused_with_sql: list[str] = []
        outcomes: dict[str, int] = {}
        spent: dict[str, float] = {}
        done = 0
        try:
            while done < CALLS:
                async with db.session() as session:
                    repository = ThingRepository(session)
                    cached = CachedRepository(repository, cache, schema=ThingOut)
                    methods = calls(hostile, repository, cached, memory)
                    for _ in range(500):
                        name, make = hostile.rng.choice(methods)
                        done += 1
                        before = len(sent)
                        started = time.perf_counter()
                        try:
                            await make()
                        except InvalidQueryError:
                            outcomes["refused"] = outcomes.get("refused", 0) + 1
                            if len(sent) != before:
                                refused_with_sql.append(f"{name}: {sent[before:]}")
                        except DOCUMENTED as exc:
                            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                            await session.rollback()  # a failed statement may end the transaction
                        except Exception as exc:
                            leaks.append(f"{name}: {type(exc).__name__}: {exc!s:.200}")
                            await session.rollback()
                        else:
                            outcomes["ok"] = outcomes.get("ok", 0) + 1
                        spent[name] = spent.get(name, 0) + time.perf_counter() - started
                    await session.rollback()  # keep the table small: each batch starts over
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", count)
        print(f"fuzz seed {SEED}: {done} calls, {outcomes}")
        print(sorted(spent.items(), key=lambda item: -item[1])[:8])
        assert not leaks, f"seed {SEED}: {len(leaks)} raw errors, e.g. {sorted(set(leaks))[:10]}"
        assert not refused_with_sql, f"seed {SEED}: refused after SQL: {refused_with_sql[:5]}"
        assert done >= CALLS
        # the generator reaches both sides of the boundary
        assert outcomes.get("refused", 0) > CALLS // 4
        assert outcomes.get("ok", 0) > CALLS // 20
        assert all(issubclass(kind, UnderlayError) for kind in DOCUMENTED)
