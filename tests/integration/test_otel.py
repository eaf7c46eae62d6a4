"""OpenTelemetry: spans and metrics from a real database and cache, read back from the SDK."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import BaseModel, ConfigDict
from sqlalchemy import MetaData, event
from sqlalchemy.orm import Session

from tests.integration.repo_models import Author, AuthorRepository, RepoBase
from underlay import Database, DuplicateError, SQLAlchemyRepository
from underlay.cache import CachedRepository, MemoryCache, RedisCache
from underlay.events import observer_for_cache
from underlay.otel import METRIC_NAMES, SPAN_NAMES, instrument


@pytest.fixture
def metadata() -> MetaData:
    return RepoBase.metadata


class AuthorOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def span_names(self) -> list[str]:
        return [span.name for span in self.spans.get_finished_spans()]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


class TestRepositorySpans:
    async def test_calls_are_spans_with_model_and_backend(
        self, db: Database, telemetry: Telemetry
    ) -> None:
        with instrument(
            db,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        ):
            async with db.session() as session:
                repo = AuthorRepository(session)
                await repo.insert_many([{"email": "a@x.io"}, {"email": "b@x.io"}])
                assert await repo.count() == 2
                assert len(await repo.list_all()) == 2
        names = telemetry.span_names()
        for method in ("insert_many", "count", "list_all"):
            assert SPAN_NAMES["repository"].format(method=method) in names
        count = next(s for s in telemetry.spans.get_finished_spans() if s.name.endswith("count"))
        assert count.attributes is not None
        assert count.attributes["underlay.model"] == "Author"
        assert count.attributes["db.system.name"] == db.engine.dialect.name
        durations = telemetry.points(METRIC_NAMES["repository_duration"])
        methods = {p.attributes["underlay.repository.method"] for p in durations}
        assert {"insert_many", "count", "list_all"} <= methods

    async def test_failed_call_records_the_error_type(
        self, db: Database, telemetry: Telemetry
    ) -> None:
        with (
            instrument(
                tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
            ),
            pytest.raises(DuplicateError),
        ):
            async with db.session() as session:
                await AuthorRepository(session).insert_many(
                    [{"email": "d@x.io"}, {"email": "d@x.io"}]
                )
        span = next(s for s in telemetry.spans.get_finished_spans() if "insert_many" in s.name)
        assert span.attributes is not None
        assert span.attributes["error.type"] == "DuplicateError"
        assert span.status.status_code is StatusCode.ERROR

    async def test_close_restores_the_methods(self, telemetry: Telemetry) -> None:
        before = SQLAlchemyRepository.get
        instrumentation = instrument(
            tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
        )
        assert SQLAlchemyRepository.get is not before
        with pytest.raises(RuntimeError, match="already instrumented"):
            instrument()
        instrumentation.close()
        assert SQLAlchemyRepository.get is before
        assert "get" not in AuthorRepository.__dict__


class TestCommitTelemetry:
    async def test_commit_spans_writes_and_rollbacks(
        self, db: Database, telemetry: Telemetry
    ) -> None:
        with instrument(
            db,
            repositories=False,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        ):
            async with db.session() as session:
                session.add(Author(email="a@x.io"))
            with pytest.raises(RuntimeError):
                async with db.session() as session:
                    session.add(Author(email="b@x.io"))
                    await session.flush()
                    raise RuntimeError("abandon")
        commits = [
            s for s in telemetry.spans.get_finished_spans() if s.name == SPAN_NAMES["commit"]
        ]
        assert [s.attributes["underlay.outcome"] for s in commits] == ["committed"]  # type: ignore[index]
        writes = telemetry.points(METRIC_NAMES["writes"])
        assert [
            (p.attributes["underlay.table"], p.attributes["underlay.write.kind"], p.value)
            for p in writes
        ] == [("authors", "insert", 1)]
        rollbacks = telemetry.points(METRIC_NAMES["rollbacks"])
        assert [p.value for p in rollbacks] == [1]
        durations = telemetry.points(METRIC_NAMES["commit_duration"])
        assert sum(p.count for p in durations) == 1

    async def test_failed_commit_is_an_error_span(self, db: Database, telemetry: Telemetry) -> None:
        """A commit that raises after it started ends its span as an error, not committed."""

        def refuse(session: Session) -> None:
            if not session.in_nested_transaction():
                raise RuntimeError("refused at commit")

        with instrument(
            db,
            repositories=False,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        ):
            event.listen(db.sync_session_class, "before_commit", refuse)
            try:
                with pytest.raises(RuntimeError, match="refused"):
                    async with db.session() as session:
                        session.add(Author(email="late@x.io"))
            finally:
                event.remove(db.sync_session_class, "before_commit", refuse)
        commits = [
            s for s in telemetry.spans.get_finished_spans() if s.name == SPAN_NAMES["commit"]
        ]
        assert len(commits) == 1
        assert commits[0].status.status_code is StatusCode.ERROR
        assert commits[0].attributes is not None
        assert commits[0].attributes["underlay.outcome"] == "failed"


class TestCacheMetrics:
    async def test_hits_misses_fills_and_invalidations(
        self, db: Database, telemetry: Telemetry
    ) -> None:
        cache = MemoryCache()
        unsubscribe = db.subscribe(observer_for_cache(cache))
        try:
            with instrument(
                caches=[cache],
                repositories=False,
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
            ):
                async with db.session() as session:
                    author = Author(email="a@x.io")
                    session.add(author)
                for _ in range(2):
                    async with db.session() as session:
                        cached = CachedRepository(
                            AuthorRepository(session), cache, schema=AuthorOut
                        )
                        assert (await cached.get(author.id)) is not None

                def value(metric: str) -> int:
                    return sum(p.value for p in telemetry.points(METRIC_NAMES[metric]))

                assert (value("cache_hits"), value("cache_misses"), value("cache_fills")) == (
                    1,
                    1,
                    1,
                )
                async with db.session() as session:
                    await AuthorRepository(session).update(author.id, {"name": "Ada"})
                assert value("cache_invalidations") >= 1
        finally:
            unsubscribe()

    async def test_breaker_state_of_an_unreachable_redis(self, telemetry: Telemetry) -> None:
        """A Redis that refuses connections opens the breaker; the gauge reports it."""
        cache = RedisCache("redis://127.0.0.1:1", failure_threshold=2, cooldown=60)
        try:
            with instrument(
                caches=[cache], repositories=False, meter_provider=telemetry.meter_provider
            ):

                def gauge() -> list[int]:
                    return [p.value for p in telemetry.points(METRIC_NAMES["cache_breaker_open"])]

                assert gauge() == [0]
                for _ in range(3):
                    assert await cache.get("k") is None
                assert gauge() == [1]
                errors = telemetry.points(METRIC_NAMES["cache_errors"])
                assert [p.value for p in errors] == [2]
        finally:
            await cache.aclose()


async def test_closed_instrumentation_stops_reporting_caches(telemetry: Telemetry) -> None:
    cache = MemoryCache()
    with instrument(caches=[cache], repositories=False, meter_provider=telemetry.meter_provider):
        await cache.get("absent")
        assert [p.value for p in telemetry.points(METRIC_NAMES["cache_misses"])] == [1]
    await cache.get("absent")
    assert telemetry.points(METRIC_NAMES["cache_misses"]) == []
