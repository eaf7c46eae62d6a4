"""Parsing of caller-supplied sort orders, filters and write values (no database)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from tests.integration.repo_models import Article, Author
from underlay import InvalidQueryError
from underlay.repository._query import (
    check_fields,
    filter_criteria,
    parse_order_by,
    values_dict,
)

SORTABLE = ("created_at", "name", "rank")


class TestParseOrderBy:
    def test_string_form(self) -> None:
        """'-created_at, +name,rank' gives three keys with their directions."""
        keys = parse_order_by(Author, "-created_at, +name,rank", SORTABLE)
        assert [(k.name, k.descending) for k in keys] == [
            ("created_at", True),
            ("name", False),
            ("rank", False),
        ]
        assert [k.spec for k in keys] == ["-created_at", "name", "rank"]

    def test_expressions_resolve_to_attributes(self) -> None:
        """Column attributes and .desc() resolve to named keys, without a whitelist."""
        keys = parse_order_by(Author, [Author.bio.desc(), Author.id], ())
        assert [(k.name, k.descending) for k in keys] == [("bio", True), ("id", False)]

    def test_other_expression_unnamed(self) -> None:
        """An arbitrary SQL expression is kept but has no attribute name."""
        (key,) = parse_order_by(Author, Author.rank + 1, ())
        assert key.name is None
        assert key.spec == "?"

    def test_none_is_no_order(self) -> None:
        """order_by=None means no ORDER BY."""
        assert parse_order_by(Author, None, SORTABLE) == []

    @pytest.mark.parametrize(
        "order_by",
        ["bio", "Name", "name;", "na me", "__table__", "", "  ", "-", "x" * 70, "rank,-rank"],
        ids=[
            "undeclared",
            "case",
            "semicolon",
            "space",
            "dunder",
            "empty",
            "blank",
            "bare-minus",
            "too-long",
            "duplicate",
        ],
    )
    def test_refused(self, order_by: str) -> None:
        """Anything but declared, well-formed, distinct fields is an InvalidQueryError."""
        with pytest.raises(InvalidQueryError):
            parse_order_by(Author, order_by, SORTABLE)

    def test_non_expression_refused(self) -> None:
        """A non-SQL object in the list is refused."""
        with pytest.raises(InvalidQueryError, match="not a SQL expression"):
            parse_order_by(Author, [object()], SORTABLE)

    def test_error_message_lists_allowed_fields(self) -> None:
        """The error tells the caller which fields are sortable."""
        with pytest.raises(InvalidQueryError, match="sortable fields: created_at, name, rank"):
            parse_order_by(Author, "bio", SORTABLE)


class TestFilterCriteria:
    def test_equality_and_null(self) -> None:
        """Values become equality criteria; None becomes IS NULL."""
        criteria = filter_criteria(Author, {"name": "x", "bio": None}, ("name", "bio"))
        rendered = [str(c) for c in criteria]
        assert rendered == ["authors.name = :name_1 AND authors.bio IS NULL"]

    @pytest.mark.parametrize(
        "filter_by",
        [{"email": "x"}, {1: "x"}, {"name": ("a",)}, {"name": {"a": 1}}],
        ids=["undeclared", "non-string-key", "tuple-value", "mapping-value"],
    )
    def test_refused(self, filter_by: Any) -> None:
        """Undeclared keys and non-scalar values are refused."""
        with pytest.raises(InvalidQueryError):
            filter_criteria(Author, filter_by, ("name",))

    def test_not_a_mapping(self) -> None:
        """A list of pairs is not a filter mapping."""
        with pytest.raises(InvalidQueryError, match="mapping"):
            filter_criteria(Author, [("name", "x")], ("name",))  # type: ignore[arg-type]


class TestValuesAndFields:
    def test_values_from_schema_use_set_fields(self) -> None:
        """A Pydantic model contributes only fields that were set."""

        class Patch(BaseModel):
            name: str | None = None
            rank: int = 0

        assert values_dict(Author, Patch(name="x")) == {"name": "x"}

    def test_values_refuse_unknown_and_other_types(self) -> None:
        """Unknown attribute names and non-mapping values are refused."""
        with pytest.raises(InvalidQueryError, match="no column attribute 'nope'"):
            values_dict(Author, {"nope": 1})
        with pytest.raises(InvalidQueryError):
            values_dict(Author, [("name", "x")])  # type: ignore[arg-type]

    def test_check_fields(self) -> None:
        """Declared fields must be column attributes of the model."""
        assert check_fields(Article, ["slug"], kind="sortable") == ("slug",)
        with pytest.raises(TypeError, match="author"):
            check_fields(Article, ["author"], kind="filterable")
