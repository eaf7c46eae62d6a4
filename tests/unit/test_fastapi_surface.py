"""underlay.fastapi: the public names, header parsing and problem bodies (no database)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fastapi import HTTPException

import underlay.fastapi
from underlay.fastapi import etag, if_match_version, problem_response, require_if_match
from underlay.fastapi._problems import is_unavailable


class TestSurface:
    def test_contract_names(self) -> None:
        """The names DESIGN.md promises are importable, and __all__ is sorted."""
        for name in ("install", "session_dependency", "if_match_version", "require_if_match"):
            assert name in underlay.fastapi.__all__
        assert underlay.fastapi.__all__ == sorted(underlay.fastapi.__all__)

    def test_import_underlay_does_not_load_fastapi(self) -> None:
        """`import underlay` loads neither FastAPI nor Starlette."""
        code = "import sys, underlay; print('fastapi' in sys.modules, 'starlette' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "False False"

    def test_missing_fastapi_names_the_extra(self) -> None:
        """Without FastAPI installed, importing underlay.fastapi names the extra."""
        code = (
            "import sys; sys.modules['fastapi'] = None\n"
            "try:\n    import underlay.fastapi\n"
            "except ImportError as exc:\n    print(type(exc).__name__, exc)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.startswith("MissingDependencyError")
        assert "underlay[fastapi]" in out


class TestETags:
    def test_etag_is_weak_version(self) -> None:
        """The ETag of version 3 is W/"3", from an int or an entity."""

        class Entity:
            version = 3

        assert etag(3) == etag(Entity()) == 'W/"3"'
        with pytest.raises(TypeError):
            etag("3")

    @pytest.mark.parametrize(
        ("header", "version"),
        [('W/"3"', 3), ('"3"', 3), (' W/"12" ', 12), ("*", None), (None, None)],
        ids=["weak", "strong", "spaces", "star", "absent"],
    )
    async def test_if_match_version(self, header: str | None, version: int | None) -> None:
        """If-Match parses to the version; * and no header mean no check."""
        assert await if_match_version(header) == version

    @pytest.mark.parametrize(
        "header",
        ['W/"1", W/"2"', "3", 'W/"x"', '"-1"', '"' + "9" * 30 + '"'],
        ids=["list", "unquoted", "not-a-number", "negative", "huge"],
    )
    async def test_if_match_naming_no_version_fails_the_precondition(self, header: str) -> None:
        """A header that names no single version answers 412."""
        with pytest.raises(HTTPException) as info:
            await if_match_version(header)
        assert info.value.status_code == 412

    @pytest.mark.parametrize("header", [None, "*"], ids=["absent", "star"])
    async def test_require_if_match(self, header: str | None) -> None:
        """require_if_match answers 428 without a version, and returns one when given."""
        with pytest.raises(HTTPException) as info:
            await require_if_match(header)
        assert info.value.status_code == 428
        assert await require_if_match('W/"4"') == 4


class TestProblems:
    def test_problem_body(self) -> None:
        """A problem response has the RFC 9457 members and media type."""
        response = problem_response(409, detail="taken", instance="/x", code="duplicate")
        assert response.media_type == "application/problem+json"
        assert json.loads(bytes(response.body)) == {
            "type": "about:blank",
            "title": "Conflict",
            "status": 409,
            "detail": "taken",
            "instance": "/x",
            "code": "duplicate",
        }

    def test_unavailable_classification(self) -> None:
        """Pool timeouts and refused connections count as unavailable; other errors do not."""
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        assert is_unavailable(PoolTimeout("pool"))
        assert is_unavailable(ConnectionRefusedError())
        wrapped = RuntimeError("wrapped")
        wrapped.__cause__ = ConnectionResetError()
        assert is_unavailable(wrapped)
        assert not is_unavailable(ValueError("boom"))
