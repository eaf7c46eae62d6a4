"""Random filter trees give the same rows in SQL, in a reference evaluation and in memory."""

from __future__ import annotations

import asyncio
import operator
import random
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from tests.conftest import Backend, reset_schema
from tests.integration.query_models import Color, Post, PostRepository, QueryBase, Writer
from underlay import Database, InMemoryRepository
from underlay.query import And, Condition, Filter, Not, Or, allowed_operators

TITLES = ["Ada", "ada", "100%", "a_b", "a\\b", "axb", "Bob", "", "b*[?]"]
FRAGMENTS = ["a", "A", "%", "_", "\\", "b", "Ad", "x", "", "*", "[?]", "0%"]
BODIES = [None, "hello", "Hello", "x%y", ""]
REFS = [uuid.UUID(int=i + 1) for i in range(3)]
EMAILS = ["ada@x.io", "bob@x.io", "gone@x.io"]
NAMES = ["Ada", "Bob", "Gone"]

#: Field -> (value strategy, how the reference reads a row's value).
DOMAINS: dict[str, list[Any]] = {
    "title": TITLES,
    "body": [v for v in BODIES if v is not None],
    "views": list(range(6)),
    "big": [0, 2**40, -5],
    "score": [0.5, 1.5, -2.0],
    "price": [Decimal("1.5"), Decimal(0), Decimal("2.25")],
    "published": [True, False],
    "day": [date(2026, 1, d) for d in range(1, 5)],
    "at": [datetime(2026, 1, 1, h, tzinfo=UTC) for h in range(4)],
    "ref": REFS,
    "color": list(Color),
    "writer.email": EMAILS,
    "writer.name": NAMES,
}


def _text_form(value: Any) -> Any:
    """Spell a typed value the way a query string would."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Color):
        return value.name
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, int | Decimal | uuid.UUID | float):
        return str(value)
    return value


@st.composite
def conditions(draw: st.DrawFn) -> tuple[Condition, Condition]:
    """A condition as typed (for the reference) and as sent (sometimes spelled as text)."""
    field = draw(st.sampled_from(sorted(DOMAINS)))
    column = (Writer if "." in field else Post).__table__.c[field.split(".")[-1]]
    op = draw(st.sampled_from(sorted(allowed_operators(column))))
    domain = DOMAINS[field]
    if op == "is_null":
        value: Any = draw(st.booleans())
    elif op in ("in", "not_in"):
        value = tuple(draw(st.lists(st.sampled_from(domain), min_size=1, max_size=3)))
    elif op == "between":
        value = (draw(st.sampled_from(domain)), draw(st.sampled_from(domain)))
    elif op in ("eq", "ne", "lt", "le", "gt", "ge"):
        value = draw(st.sampled_from(domain))
    else:
        value = draw(st.sampled_from(FRAGMENTS + [t for t in TITLES if t]))
    sent = value
    if op != "is_null" and draw(st.booleans()):
        sent = tuple(map(_text_form, value)) if isinstance(value, tuple) else _text_form(value)
    return Condition(field, op, value), Condition(field, op, sent)


def trees() -> st.SearchStrategy[tuple[Filter, Filter]]:
    def group(kind: Any, inner: Any) -> Any:
        return st.lists(inner, min_size=2, max_size=3).map(
            lambda items: (kind(tuple(i[0] for i in items)), kind(tuple(i[1] for i in items)))
        )

    def extend(inner: Any) -> Any:
        negated = inner.map(lambda pair: (Not(pair[0]), Not(pair[1])))
        return st.one_of(group(And, inner), group(Or, inner), negated)

    return st.recursive(conditions(), extend, max_leaves=6)


def _depth(node: Filter, level: int = 0) -> int:
    if isinstance(node, Condition):
        return level
    if isinstance(node, Not):
        return _depth(node.item, level + 1)
    step = 1 if isinstance(node, Or) else 0
    return max(_depth(item, level + step) for item in node.items)


def _value(post: Post, writers: dict[int, Writer], field: str) -> tuple[bool, Any]:
    """Return (row present, value); a path through a missing or deleted writer is absent."""
    if "." not in field:
        return True, getattr(post, field)
    writer = writers.get(post.writer_id) if post.writer_id is not None else None
    if writer is None or writer.deleted_at is not None:
        return False, None
    return True, getattr(writer, field.split(".")[1])


def _text_match(op: str, have: str, want: str) -> bool:
    if op.startswith("i") and op != "in":
        op, have, want = op[1:], have.lower(), want.lower()
    if op == "like":
        return have == want
    if op == "contains":
        return want in have
    return bool(getattr(have, op)(want))


def reference(node: Filter, post: Post, writers: dict[int, Writer]) -> bool:
    """Evaluate a typed filter on one row, written from the documented semantics."""
    if isinstance(node, And):
        return all(reference(item, post, writers) for item in node.items)
    if isinstance(node, Or):
        return any(reference(item, post, writers) for item in node.items)
    if isinstance(node, Not):
        return not reference(node.item, post, writers)
    present, have = _value(post, writers, node.field)
    if not present:
        return False
    op, want = node.op, node.value
    if op == "is_null":
        return (have is None) is want
    if op == "ne":
        return have is None or have != want
    if op == "not_in":
        return have is None or have not in want
    if have is None:
        return False
    if op == "in":
        return have in want
    if op == "between":
        return want[0] <= have <= want[1]
    if op in ("eq", "lt", "le", "gt", "ge"):
        return bool(getattr(operator, op)(have, want))
    return _text_match(op, have, want)


async def _seed(db: Database) -> None:
    rng = random.Random(2026)
    async with db.session() as session:
        writers = [
            Writer(email=email, name=name, deleted_at=None if name != "Gone" else datetime.now(UTC))
            for email, name in zip(EMAILS, NAMES, strict=True)
        ]
        session.add_all(writers)
        await session.flush()
        for i in range(40):
            session.add(
                Post(
                    title=rng.choice(TITLES),
                    body=rng.choice(BODIES),
                    views=rng.randrange(6),
                    big=rng.choice(DOMAINS["big"]),
                    score=rng.choice([None, *DOMAINS["score"]]),
                    price=rng.choice(DOMAINS["price"]),
                    published=rng.random() < 0.5,
                    day=rng.choice([None, *DOMAINS["day"]]),
                    at=rng.choice([None, *DOMAINS["at"]]),
                    ref=rng.choice(REFS),
                    color=rng.choice(list(Color)),
                    writer_id=rng.choice([None, *(w.id for w in writers)]),
                    deleted_at=datetime.now(UTC) if i % 13 == 0 else None,
                )
            )


def test_random_filters_agree(backend: Backend) -> None:
    """SQL, a reference evaluation in Python and the in-memory repository pick the same rows."""
    loop = asyncio.new_event_loop()
    db = Database(backend.url)
    try:
        loop.run_until_complete(reset_schema(db))
        loop.run_until_complete(db.create_all(QueryBase.metadata))
        loop.run_until_complete(_seed(db))

        async def load() -> tuple[list[Post], dict[int, Writer]]:
            async with db.session() as session:
                posts = await session.execute(select(Post).options(selectinload(Post.writer)))
                statement = select(Writer).execution_options(include_deleted=True)
                writers = (await session.execute(statement)).scalars()
                return list(posts.scalars()), {w.id: w for w in writers}

        posts, writers = loop.run_until_complete(load())
        memory = InMemoryRepository.for_repository(PostRepository, posts)

        async def sql_ids(tree: Filter) -> list[int]:
            async with db.session() as session:
                rows = await PostRepository(session).list_all(filter_by=tree, order_by="id")
                return [row.id for row in rows]

        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(trees())
        def check(pair: tuple[Filter, Filter]) -> None:
            typed, sent = pair
            assume(_depth(typed) <= 4)
            expected = sorted(p.id for p in posts if reference(typed, p, writers))
            assert loop.run_until_complete(sql_ids(sent)) == expected
            in_memory = loop.run_until_complete(memory.list_all(filter_by=sent))
            assert sorted(p.id for p in in_memory) == expected

        check()
    finally:
        loop.run_until_complete(db.dispose())
        loop.close()
