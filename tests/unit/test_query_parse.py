"""The query language's parsers: grammar, bounds, round trips and a fuzz of hostile input."""

from __future__ import annotations

import contextlib
import json
import random
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from underlay import InvalidQueryError
from underlay.query import (
    OPERATORS,
    And,
    Condition,
    Filter,
    FilterLimits,
    Not,
    Or,
    as_filter,
    parse_filter,
    parse_query_string,
    split_list,
    to_mapping,
    to_query_string,
)

LIST_OPS = ("in", "not_in", "between")


class TestGrammar:
    def test_keys_split_into_field_and_operator(self) -> None:
        """``field`` means eq, ``field__op`` names the operator, paths use dots."""
        tree = parse_filter({"email": "a", "rank__ge": 3, "author.email__icontains": "x"})
        assert tree == And(
            (
                Condition("email", "eq", "a"),
                Condition("rank", "ge", 3),
                Condition("author.email", "icontains", "x"),
            )
        )

    def test_unknown_suffix_is_part_of_the_field(self) -> None:
        """A ``__`` suffix that is no operator stays in the field name."""
        assert parse_filter({"foo__bar": 1}) == Condition("foo__bar", "eq", 1)

    def test_groups(self) -> None:
        """``or`` takes a list, ``not`` one mapping; nested ANDs flatten."""
        tree = parse_filter(
            {"or": [{"a": 1}, {"b__lt": 2, "c": 3}], "not": {"d__is_null": True}, "and": [{"e": 5}]}
        )
        assert tree == And(
            (
                Or(
                    (
                        Condition("a", "eq", 1),
                        And((Condition("b", "lt", 2), Condition("c", "eq", 3))),
                    )
                ),
                Not(Condition("d", "is_null", True)),
                Condition("e", "eq", 5),
            )
        )

    def test_none_means_null(self) -> None:
        """``None`` with eq / ne becomes is_null true / false."""
        assert parse_filter({"a": None, "b__ne": None}) == And(
            (Condition("a", "is_null", True), Condition("b", "is_null", False))
        )

    def test_query_string_lists_and_groups(self) -> None:
        """List operators split on unescaped commas; groups are JSON."""
        tree = parse_query_string(
            "name__in=ada,b%5C,c&age__between=1,5&or=%5B%7B%22x%22%3A1%7D%2C%7B%22y%22%3A2%7D%5D"
        )
        assert tree == And(
            (
                Condition("name", "in", ("ada", "b,c")),
                Condition("age", "between", ("1", "5")),
                Or((Condition("x", "eq", 1), Condition("y", "eq", 2))),
            )
        )

    def test_ignored_parameters(self) -> None:
        """Parameters named in ``ignore`` (paging, sorting) are not filters."""
        tree = parse_query_string("order_by=-id&limit=5&name=ada", ignore={"order_by", "limit"})
        assert tree == Condition("name", "eq", "ada")

    def test_pairs_input(self) -> None:
        """Already-decoded (key, value) pairs parse like a query string."""
        assert parse_query_string([("a__ge", "1"), ("a__le", "3")]) == And(
            (Condition("a", "ge", "1"), Condition("a", "le", "3"))
        )

    def test_split_list_escapes(self) -> None:
        r"""``\,`` is a comma and ``\\`` a backslash; an empty value is one empty string."""
        assert split_list(r"a\\,b\,c") == ("a\\", "b,c")
        assert split_list("") == ("",)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"a__in": 5}, "takes a list"),
            ({"a__between": [1]}, "two values"),
            ({"a__in": []}, "at least one value"),
            ({"a__is_null": "maybe"}, "true or false"),
            ({"a": [1, 2]}, "single value"),
            ({"a": {"b": 1}}, "single value"),
            ({"or": []}, "non-empty list"),
            ({"or": {"a": 1}}, "non-empty list"),
            ({"not": [1]}, "mapping"),
            ({"__class__": 1}, "Invalid filter key"),
            ({"a..b": 1}, "Invalid filter key"),
            ({"a b": 1}, "Invalid filter key"),
            ({1: 1}, "Invalid filter key"),
            ({"a__gt": None}, "needs a value"),
            ({"a__in": [1, None]}, "cannot list None"),
            ({"a": "x\x00y"}, "NUL"),
            ({"a": "\ud800"}, "not valid text"),
        ],
        ids=[
            "in-scalar",
            "between-one",
            "in-empty",
            "is-null-word",
            "eq-list",
            "eq-mapping",
            "or-empty",
            "or-mapping",
            "not-list",
            "dunder",
            "empty-path-part",
            "space",
            "int-key",
            "gt-none",
            "in-none",
            "nul",
            "surrogate",
        ],
    )
    def test_malformed(self, data: Any, message: str) -> None:
        """Malformed filters are refused with a message saying what is wrong."""
        with pytest.raises(InvalidQueryError, match=message):
            parse_filter(data)

    def test_not_a_filter(self) -> None:
        """filter_by must be a mapping or a tree."""
        with pytest.raises(InvalidQueryError, match="mapping or a filter"):
            as_filter([("a", 1)])
        with pytest.raises(InvalidQueryError, match="Not a filter"):
            as_filter(And((object(),)))  # type: ignore[arg-type]


class TestBounds:
    limits = FilterLimits(max_clauses=3, max_in=2, max_depth=2, max_string=5, max_query_length=200)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"a": 1, "b": 2, "c": 3, "d": 4}, "more than 3 conditions"),
            ({"or": [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]}, "more than 3 conditions"),
            ({"a__in": [1, 2, 3]}, "more than 2 values"),
            ({"not": {"or": [{"not": {"a": 1}}, {"b": 1}]}}, "deeper than 2"),
            ({"a": "toolong"}, "longer than 5"),
            ({"a__in": ["ok", "toolong"]}, "longer than 5"),
        ],
        ids=["clauses", "clauses-in-groups", "in-length", "depth", "string", "string-in-list"],
    )
    def test_each_bound(self, data: Any, message: str) -> None:
        """Every bound is enforced on the mapping form."""
        with pytest.raises(InvalidQueryError, match=message):
            parse_filter(data, limits=self.limits)

    def test_bounds_on_query_strings(self) -> None:
        """The same bounds hold for query strings, plus their own length."""
        with pytest.raises(InvalidQueryError, match="longer than 200"):
            parse_query_string("a=" + "x" * 300, limits=self.limits)
        with pytest.raises(InvalidQueryError):
            parse_query_string("a=1&b=2&c=3&d=4&e=5", limits=self.limits)
        with pytest.raises(InvalidQueryError, match="more than 2 values"):
            parse_query_string("a__in=1,2,3", limits=self.limits)

    def test_bounds_on_trees(self) -> None:
        """Trees built in code are checked too."""
        deep: Filter = Condition("a", "eq", 1)
        for _ in range(3):
            deep = Not(deep)
        with pytest.raises(InvalidQueryError, match="deeper than 2"):
            as_filter(deep, limits=self.limits)
        with pytest.raises(InvalidQueryError, match="more than 3"):
            as_filter(And(tuple(Condition(f"f{i}", "eq", i) for i in range(4))), limits=self.limits)

    def test_deep_and_nesting_is_bounded(self) -> None:
        """Nested 'and' groups add no level but cannot recurse without bound."""
        data: dict[str, Any] = {"a": 1}
        for _ in range(50):
            data = {"and": [data]}
        with pytest.raises(InvalidQueryError, match="too deeply"):
            parse_filter(data)

    def test_deep_json_is_refused(self) -> None:
        """JSON nested past the interpreter's recursion limit is an InvalidQueryError."""
        text = "[" * 100_000 + "]" * 100_000
        with pytest.raises(InvalidQueryError):
            parse_query_string([("or", text)], limits=FilterLimits(max_query_length=10**6))


# -- round trips --------------------------------------------------------------------------

_names = st.sampled_from(["a", "b", "rank", "email", "author.email", "or", "x_y", "c__d"])
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)


@st.composite
def _conditions(draw: st.DrawFn) -> Condition:
    field = draw(_names)
    op = draw(st.sampled_from(OPERATORS))
    if op == "is_null":
        return Condition(field, op, draw(st.booleans()))
    if op in LIST_OPS:
        size = 2 if op == "between" else draw(st.integers(1, 4))
        return Condition(field, op, tuple(draw(st.lists(_text, min_size=size, max_size=size))))
    return Condition(field, op, draw(_text))


def _trees() -> st.SearchStrategy[Filter]:
    return st.recursive(
        _conditions(),
        lambda inner: st.one_of(
            st.builds(lambda items: And(tuple(items)), st.lists(inner, min_size=2, max_size=3)),
            st.builds(lambda items: Or(tuple(items)), st.lists(inner, min_size=2, max_size=3)),
            st.builds(Not, inner),
        ),
        max_leaves=8,
    )


def _depth(node: Filter, level: int = 0) -> int:
    if isinstance(node, Condition):
        return level
    if isinstance(node, Not):
        return _depth(node.item, level + 1)
    step = 1 if isinstance(node, Or) else 0
    return max((_depth(item, level + step) for item in node.items), default=level)


class TestRoundTrip:
    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(_trees())
    def test_query_string_round_trip(self, tree: Filter) -> None:
        """Any normalised tree of text values survives query string and mapping round trips."""
        limits = FilterLimits(max_depth=20)
        normal = as_filter(tree, limits=limits)
        text = to_query_string(normal)
        assert parse_query_string(text, limits=limits) == normal
        assert parse_filter(to_mapping(normal), limits=limits) == normal
        assert to_query_string(parse_query_string(text, limits=limits)) == text

    def test_typed_values_come_back_as_text(self) -> None:
        """Typed values are written as text the column coercion reads back."""
        tree = parse_filter({"n__in": [1, 2], "ok": True, "d__ge": "2026-01-01"})
        assert parse_query_string(to_query_string(tree)) == And(
            (
                Condition("n", "in", ("1", "2")),
                Condition("ok", "eq", "true"),
                Condition("d", "ge", "2026-01-01"),
            )
        )


# -- fuzz -----------------------------------------------------------------------------------

_ALPHABET = string.ascii_letters + string.digits + "_.&=%,[]{}\":\\ -+#?/;'\x00\u00e9\ud800"
_PIECES = [
    "or=",
    "not=",
    "and=",
    "__in=",
    "__between=",
    "__is_null=",
    "__icontains=",
    "__like=",
    "[",
    "]",
    "{",
    "}",
    '{"a":',
    '[{"b__in":[1,2]}]',
    "%ZZ",
    "%C3%A9",
    "%ED%A0%80",
    "&&",
    "==",
    "__",
    "..",
    "NaN",
    "1e999999",
    '"' * 3,
    "\\,",
    "9" * 30,
]


def hostile_strings(count: int, seed: int) -> list[str]:
    """Return ``count`` random and hostile query strings (reproducible from ``seed``)."""
    rng = random.Random(seed)
    found: list[str] = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.5:
                parts.append(rng.choice(_PIECES))
            else:
                parts.append("".join(rng.choices(_ALPHABET, k=rng.randint(0, 12))))
        found.append("".join(parts))
    found += [
        "or=" + "[" * 5000,
        "not=" + '{"not":' * 300 + "{}" + "}" * 300,
        "a__in=" + ",".join("1" * 200),
        "&".join(f"f{i}=1" for i in range(500)),
        "x" * 20000,
    ]
    return found


class TestFuzz:
    def test_hostile_query_strings(self) -> None:
        """10,000+ random and hostile strings give a filter or InvalidQueryError, nothing else."""
        parsed = refused = 0
        for text in hostile_strings(10_000, seed=12):
            try:
                tree = parse_query_string(text)
            except InvalidQueryError:
                refused += 1
            else:
                assert isinstance(tree, Condition | And | Or | Not)
                parsed += 1
        assert parsed > 300
        assert refused > 500

    def test_hostile_json_groups(self) -> None:
        """Random JSON documents in a group parameter never raise anything else."""
        rng = random.Random(7)
        atoms: list[Any] = [1, "a", None, True, 1.5, [], {}, [1, 2], {"a": 1}, {"b__in": [1]}]
        for _ in range(2000):
            doc: Any = rng.choice(atoms)
            for _ in range(rng.randint(0, 4)):
                doc = rng.choice([[doc], {"or": [doc]}, {"not": doc}, {"a": doc}, [doc, doc]])
            for key in ("or", "not", "and"):
                with contextlib.suppress(InvalidQueryError):
                    parse_query_string([(key, json.dumps(doc))])

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.text(max_size=60))
    def test_any_text(self, text: str) -> None:
        """Arbitrary text (surrogates included) parses or is refused with InvalidQueryError."""
        with contextlib.suppress(InvalidQueryError):
            parse_query_string(text)
