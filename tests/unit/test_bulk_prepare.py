"""prepare_batch: the column-wise check agrees with the row-by-row path, or steps aside."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from tests.integration.models import new_base
from underlay import InvalidQueryError
from underlay.repository._bulk import RowReader, coerce_groups, group_rows, prepare_batch

PrepBase = new_base()


class Gadget(PrepBase):
    __tablename__ = "gadgets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(8))
    weight: Mapped[float | None]
    note: Mapped[str | None] = mapped_column("note_text", String(200))


class GadgetIn(BaseModel):
    id: int
    name: str


def _reader() -> RowReader:
    return RowReader(Gadget, managed=None, operation="insert_many")


def _general(rows: list[Any]) -> list[list[Any]]:
    return coerce_groups(Gadget, group_rows(rows, _reader()))


def _rows(count: int) -> list[dict[str, Any]]:
    return [{"name": f"g{i}", "id": i, "weight": i / 2, "note": None} for i in range(count)]


def test_uniform_canonical_rows_give_columns() -> None:
    rows = _rows(50)
    prepared = prepare_batch(Gadget, rows, _reader())  # type: ignore[arg-type]  # dict rows
    assert prepared.groups == [rows]
    assert prepared.groups[0] is rows
    assert prepared.columns == [
        list(range(50)),
        [f"g{i}" for i in range(50)],
        [None] * 50,
        [i / 2 for i in range(50)],
    ]


@pytest.mark.parametrize(
    ("index", "row"),
    [
        (7, {"name": "g7", "id": "7", "weight": 3.5, "note": None}),  # converted value
        (7, {"name": "g7", "id": 7, "weight": 3.5, "nope": None}),  # same size, other keys
        (7, {"name": "g7", "id": 7, "weight": 3.5}),  # fewer keys
        (7, OrderedDict(name="g7", id=7, weight=3.5, note=None)),  # not a plain dict
        (7, GadgetIn(id=7, name="g7")),  # a model
        (7, {"name": "g7", "id": 7, "weight": float("nan"), "note": None}),  # refused value
        (7, {"name": "g7", "id": 2**40, "weight": 3.5, "note": None}),  # out of range
        (7, {"name": "gadget-77", "id": 7, "weight": 3.5, "note": None}),  # too long
    ],
    ids=["convert", "other-keys", "fewer-keys", "ordered-dict", "model", "nan", "range", "long"],
)
def test_other_batches_take_the_general_path(index: int, row: Any) -> None:
    rows: list[Any] = _rows(20)
    rows[index] = row
    try:
        expected = _general(rows)
    except InvalidQueryError as error:
        refusal = str(error)
    else:
        refusal = None
    if refusal is not None:
        with pytest.raises(InvalidQueryError) as raised:
            prepare_batch(Gadget, rows, _reader())
        assert str(raised.value) == refusal
        return
    prepared = prepare_batch(Gadget, rows, _reader())
    assert prepared.columns is None
    assert prepared.groups == expected


def test_unknown_first_keys_refused_as_before() -> None:
    rows = [{"id": i, "name": "x", "colour": "red"} for i in range(5)]
    with pytest.raises(InvalidQueryError, match="colour"):
        _general(rows)
    with pytest.raises(InvalidQueryError, match="colour"):
        prepare_batch(Gadget, rows, _reader())  # type: ignore[arg-type]  # dict rows


def test_single_key_rows_and_single_rows_take_the_general_path() -> None:
    one_key: list[Any] = [{"id": i} for i in range(5)]
    assert prepare_batch(Gadget, one_key, _reader()).columns is None
    single: list[Any] = _rows(1)
    prepared = prepare_batch(Gadget, single, _reader())
    assert prepared.columns is None
    assert prepared.groups == [single]
