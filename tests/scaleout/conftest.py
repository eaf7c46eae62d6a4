"""Engines for the scale-out tests, started by the repository's own `scripts/scaleout.sh`.

Each fixture starts its engine (idempotent) and yields what the tests connect to. Nothing is
stopped at the end of a session: `.ci/run` starts every engine up front and stops them when it
ends; locally `bash scripts/scaleout.sh stop --purge all` does. A missing binary skips the
tests, except under CI / `UNDERLAY_REQUIRE_SERVICES`, where it fails the run.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests import services

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "scaleout.sh"
_BINARIES = {
    "pg": ("pg_config", "runuser"),
    "pgbouncer": ("pgbouncer",),
    "cluster": ("redis-server", "redis-cli"),
    "sentinel": ("redis-server", "redis-cli"),
}


def scaleout(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Run the scale-out script and return the `KEY=VALUE` lines it printed."""
    result = subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/scaleout.sh {' '.join(args)} failed:\n{result.stderr}")
    pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return dict(pairs)


def _engine(name: str) -> Iterator[dict[str, str]]:
    missing = [binary for binary in _BINARIES[name] if shutil.which(binary) is None]
    if missing:
        services.unavailable(f"scale-out engine {name!r}", f"binaries {missing}")
    # Never stopped here: another pytest session (an xdist worker, a second checkout) may be
    # using the engine. `.ci/run` stops everything when it ends; locally,
    # `bash scripts/scaleout.sh stop --purge all` does.
    yield scaleout("start", name)


@pytest.fixture(scope="session")
def pg_pair() -> Iterator[dict[str, str]]:
    """The private primary and its streaming replica."""
    yield from _engine("pg")


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[dict[str, str]]:
    """PgBouncer in transaction mode in front of the private primary."""
    yield from _engine("pgbouncer")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[dict[str, str]]:
    """A 3-master + 3-replica Redis Cluster."""
    yield from _engine("cluster")


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[dict[str, str]]:
    """A Redis master, its replica and one Sentinel."""
    yield from _engine("sentinel")


@pytest.fixture
async def pair_database(pg_pair: dict[str, str]) -> AsyncIterator[tuple[str, str]]:
    """A fresh database on the private primary (and so on its replica): primary and replica URL."""
    name = f"scaleout_{uuid.uuid4().hex[:10]}"
    primary = pg_pair["SCALEOUT_PRIMARY_URL"]
    await services._admin(primary, f'CREATE DATABASE "{name}"')
    replica = make_url(pg_pair["SCALEOUT_REPLICA_URL"]).set(database=name)
    try:
        # CREATE DATABASE reaches the replica asynchronously: wait until it can be opened.
        async with asyncio.timeout(30):
            while True:
                try:
                    await services._admin(replica.render_as_string(hide_password=False), "SELECT 1")
                    break
                except Exception:  # InvalidCatalogNameError until the CREATE is replayed
                    await asyncio.sleep(0.05)
        yield (
            make_url(primary).set(database=name).render_as_string(hide_password=False),
            replica.render_as_string(hide_password=False),
        )
    finally:
        await services._admin(primary, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def failover_engine(name: str) -> Iterator[dict[str, str]]:
    """Hold the private failover set's `name` for one test; repair its topology around it.

    The tests that kill or pause nodes use their own set of Redis engines
    (`SCALEOUT_SET=failover`), never the ones other sessions share. One test at a time holds
    the set (a file lock, across xdist workers); `restore` before and after leaves the
    topology as `start` builds it, however the test ended.
    """
    missing = [binary for binary in _BINARIES[name] if shutil.which(binary) is None]
    if missing:
        services.unavailable(f"scale-out engine {name!r}", f"binaries {missing}")
    base = Path(os.environ.get("SCALEOUT_DIR") or Path(tempfile.gettempdir(), "underlay-scaleout"))
    lock_path = Path(f"{base}-failover.lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield scaleout("restore", name, env={"SCALEOUT_SET": "failover"})
        finally:
            scaleout("restore", name, env={"SCALEOUT_SET": "failover"})
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def failover_cluster() -> Iterator[dict[str, str]]:
    """The private failover cluster (3 masters + 3 replicas), repaired before and after."""
    yield from failover_engine("cluster")


@pytest.fixture
def failover_sentinel() -> Iterator[dict[str, str]]:
    """The private failover Sentinel set-up, repaired before and after."""
    yield from failover_engine("sentinel")
