"""The cache's optional dependencies and its import footprint."""

from __future__ import annotations

import subprocess
import sys

import pytest

from underlay import MissingDependencyError
from underlay.cache import MemoryCache, RedisCache


class TestOptionalDependencies:
    def test_redis_cache_without_redis_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """RedisCache without the redis package raises MissingDependencyError for [redis]."""
        for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, "redis", None)
        with pytest.raises(MissingDependencyError, match=r"underlay\[redis\]"):
            RedisCache("redis://127.0.0.1:6379")

    def test_memory_cache_needs_no_server(self) -> None:
        """MemoryCache is constructed without any optional dependency or connection."""
        assert len(MemoryCache()) == 0

    def test_importing_the_cache_package_does_not_import_redis(self) -> None:
        """`import underlay.cache` loads redis only when a RedisCache is built."""
        code = "import sys, underlay.cache; print('redis' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "False"
