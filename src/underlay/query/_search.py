"""Text search over a repository's declared fields: ILIKE, PostgreSQL full text, SQLite FTS5."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, case, column, func, literal, literal_column, or_, select, table
from sqlalchemy.sql.elements import ColumnElement

from underlay.exceptions import InvalidQueryError
from underlay.query._compile import _columns, _like_escape, _mapper
from underlay.query._parse import DEFAULT_LIMITS, FilterLimits

__all__ = ["SearchMode", "SearchSpec", "search_terms"]

SearchMode = Literal["ilike", "fulltext"]


def search_terms(text: Any, limits: FilterLimits = DEFAULT_LIMITS) -> list[str]:
    """Split search text into words, checking it first.

    Raises:
        InvalidQueryError: Not text, too long, or with a NUL character.
    """
    if not isinstance(text, str):
        raise InvalidQueryError(f"Search text must be a string, not {type(text).__name__}.")
    if len(text) > limits.max_string or "\x00" in text:
        raise InvalidQueryError(
            f"Search text must be at most {limits.max_string} characters, without NUL."
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidQueryError("Search text is not valid text.") from exc
    words = text.split()
    if len(words) > limits.max_clauses:
        raise InvalidQueryError(f"Search text has more than {limits.max_clauses} words.")
    return words


def _fts5_query(words: Sequence[str]) -> str:
    # Each word as a quoted FTS5 string: no operator or column filter from user input.
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


@dataclass(frozen=True)
class SearchSpec:
    """How a repository searches: its fields, the mode and the backend's index.

    Attributes:
        model: The mapped class searched.
        fields: Text column attributes searched.
        mode: ``"ilike"`` (every word appears in some field, case-insensitively) or
            ``"fulltext"`` (PostgreSQL ``websearch_to_tsquery``; SQLite FTS5).
        config: The PostgreSQL text search configuration.
        vector: A ``tsvector`` column attribute to match on PostgreSQL (else one is computed
            from ``fields``).
        fts_table: The SQLite FTS5 table (``rowid`` = the primary key); defaults to
            ``<table>_fts``.
    """

    model: type[Any]
    fields: tuple[str, ...]
    mode: SearchMode = "ilike"
    config: str = "simple"
    vector: str | None = None
    fts_table: str | None = None

    def __post_init__(self) -> None:
        columns = _columns(_mapper(self.model))
        for name in (*self.fields, *([self.vector] if self.vector else [])):
            if name not in columns:
                raise TypeError(f"search field {name!r} is not a column attribute")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", self.config):
            raise TypeError(f"search_config {self.config!r} is not a configuration name")
        if self.mode not in ("ilike", "fulltext"):
            raise TypeError(f"search_mode must be 'ilike' or 'fulltext', not {self.mode!r}")

    def _columns(self) -> list[Any]:
        columns = _columns(_mapper(self.model))
        return [columns[name] for name in self.fields]

    def _ilike(self, words: Sequence[str]) -> tuple[ColumnElement[bool], Any]:
        columns = self._columns()
        tests = [
            or_(*(c.ilike(f"%{_like_escape(word)}%", escape="/") for c in columns))
            for word in words
        ]
        # rank: how many (field, word) pairs match, best first
        score: Any = sum(
            (
                case((c.ilike(f"%{_like_escape(word)}%", escape="/"), 1), else_=0)
                for word in words
                for c in columns
            ),
            literal(0),
        )
        return and_(*tests), score.desc()

    def _postgres(self, text: str) -> tuple[ColumnElement[bool], Any]:
        config: Any = literal_column(f"'{self.config}'::regconfig")
        query = func.websearch_to_tsquery(config, text)
        if self.vector:
            vector: Any = _columns(_mapper(self.model))[self.vector]
        else:
            vector = func.to_tsvector(config, func.concat_ws(" ", *self._columns()))
        return vector.op("@@", is_comparison=True)(query), func.ts_rank(vector, query).desc()

    def _sqlite(self, words: Sequence[str]) -> tuple[ColumnElement[bool], Any]:
        mapper = _mapper(self.model)
        key = mapper.primary_key[0]
        name = self.fts_table or f"{mapper.local_table.name}_fts"  # type: ignore[attr-defined]  # a Table
        fts = table(name, column("rowid"), column("rank"), column(name))
        # FTS5 matches on the hidden column named after the table; each word is quoted.
        match = fts.c[name].op("MATCH", is_comparison=True)(_fts5_query(words))
        rank = select(fts.c.rank).where(match, fts.c.rowid == key).scalar_subquery()
        return key.in_(select(fts.c.rowid).where(match)), rank.asc()

    def compile(
        self, text: Any, *, dialect: str, limits: FilterLimits = DEFAULT_LIMITS
    ) -> tuple[ColumnElement[bool], Any] | None:
        """Return (WHERE criterion, ORDER BY term for ranking), or ``None`` for no words.

        Raises:
            InvalidQueryError: The text is refused (see `search_terms`).
        """
        words = search_terms(text, limits)
        if not words:
            return None
        if self.mode == "ilike":
            return self._ilike(words)
        if dialect == "postgresql":
            return self._postgres(" ".join(words))
        if dialect == "sqlite":
            return self._sqlite(words)
        return self._ilike(words)

    def predicate(self, text: Any, limits: FilterLimits = DEFAULT_LIMITS) -> Any:
        """Return a Python predicate with the ILIKE mode's meaning (for the in-memory double)."""
        words = [word.lower() for word in search_terms(text, limits)]

        def matches(entity: Any) -> bool:
            values = [str(getattr(entity, name) or "").lower() for name in self.fields]
            return all(any(word in value for value in values) for word in words)

        return matches
