"""The blog's migrations: in step with the models, and reversible step by step."""

from pathlib import Path

from underlay.migrations import check, stairway

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


async def test_models_match_migrations(underlay_database_url):
    """The test database was built by the migrations and matches the models exactly."""
    await check(underlay_database_url, script_location=MIGRATIONS)


async def test_stairway(underlay_empty_database_url):
    """Each migration upgrades, downgrades and upgrades again on an empty database."""
    assert await stairway(underlay_empty_database_url, script_location=MIGRATIONS) == ["0001"]
