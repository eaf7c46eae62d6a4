"""The public surface: names, version and optional dependencies."""

from __future__ import annotations

import doctest
import gc
import importlib
import importlib.metadata
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

import underlay
from underlay import MissingDependencyError, UnderlayError


def _public_modules() -> list[ModuleType]:
    modules = [underlay]
    for info in pkgutil.walk_packages(underlay.__path__, "underlay."):
        try:
            modules.append(importlib.import_module(info.name))
        except MissingDependencyError:
            continue
    return modules


class TestSurface:
    def test_all_is_sorted_and_complete(self) -> None:
        """__all__ lists exactly the public names of the package, sorted."""
        public = {name for name in vars(underlay) if not name.startswith("_")}
        public -= {name for name, value in vars(underlay).items() if isinstance(value, ModuleType)}
        assert sorted(underlay.__all__, key=str.lower) == sorted(underlay.__all__, key=str.lower)
        assert underlay.__all__ == sorted(underlay.__all__)
        assert set(underlay.__all__) - {"__version__"} == public

    def test_design_contract_names_exported(self) -> None:
        """Every name DESIGN.md promises at the top level of the foundation is importable."""
        for name in (
            "Database",
            "Base",
            "TimestampMixin",
            "SoftDeleteMixin",
            "VersionedMixin",
            "UnderlayError",
            "NotFoundError",
            "MultipleResultsError",
            "ConflictError",
            "StaleVersionError",
            "DuplicateError",
            "InvalidQueryError",
            "MissingDependencyError",
        ):
            assert hasattr(underlay, name), name

    def test_version_matches_metadata(self) -> None:
        """The version is defined once and matches the installed distribution."""
        assert underlay.__version__ == importlib.metadata.version("underlay")

    def test_import_needs_only_core(self) -> None:
        """`import underlay` loads no optional dependency."""
        code = (
            "import sys, underlay; "
            "print(sorted(m for m in ('redis', 'asyncpg', 'aiosqlite', 'alembic', 'pytest') "
            "if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"


class TestErrors:
    @pytest.mark.parametrize(
        ("name", "builtin"),
        [
            ("NotFoundError", LookupError),
            ("MultipleResultsError", LookupError),
            ("InvalidQueryError", ValueError),
            ("ConstraintError", ValueError),
            ("MissingDependencyError", ImportError),
        ],
        ids=["not-found", "multiple", "invalid-query", "constraint", "missing-dependency"],
    )
    def test_builtin_mixins(self, name: str, builtin: type[Exception]) -> None:
        """Errors also derive from the builtin whose meaning they share."""
        cls = getattr(underlay, name)
        assert issubclass(cls, UnderlayError)
        assert issubclass(cls, builtin)

    def test_conflict_family(self) -> None:
        """Version, duplicate, foreign-key and serialization errors are conflicts."""
        for name in (
            "StaleVersionError",
            "DuplicateError",
            "ForeignKeyError",
            "SerializationError",
        ):
            assert issubclass(getattr(underlay, name), underlay.ConflictError)

    def test_not_found_message_names_entity(self) -> None:
        """The message names the model and the id and says what to do."""
        err = underlay.NotFoundError(model=underlay.Database, id=7)
        assert "Database" in str(err)
        assert "7" in str(err)
        assert err.id == 7

    def test_missing_driver_names_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A URL whose driver is not installed raises MissingDependencyError naming the extra."""
        monkeypatch.setitem(sys.modules, "asyncpg", None)
        with pytest.raises(MissingDependencyError, match=r"underlay\[postgres\]") as info:
            underlay.Database("postgresql://u@localhost/db")
        assert info.value.extra == "postgres"
        assert isinstance(info.value, ImportError)

    def test_missing_sqlite_driver_names_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The SQLite driver maps to the sqlite extra."""
        monkeypatch.setitem(sys.modules, "aiosqlite", None)
        with pytest.raises(MissingDependencyError, match=r"underlay\[sqlite\]"):
            underlay.Database("sqlite:///x.db")


def test_docstring_examples_run() -> None:
    """Every docstring example in the package runs as a doctest."""
    failures = attempted = 0
    for module in _public_modules():
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        failures += result.failed
        attempted += result.attempted
    # an example that leaves a connection open fails here (Python 3.13 warns when it is
    # collected), not in whichever later test the collector happens to run in
    gc.collect()
    assert attempted > 0
    assert failures == 0
