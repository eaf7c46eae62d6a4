"""The hit path's header shortcut agrees with the full parse-and-check on every entry."""

from __future__ import annotations

import itertools

import pytest

from underlay.cache._entry import INVALID, UNKNOWN, current_payload, judge

EPOCH = b"1700000000000001"
NAMES = [b"r:items:5", b"r:items", b"t:tags"]
GENS = [b"17", b"1700000000000042", b"3"]


def entry(epoch: bytes, pairs: list[tuple[bytes, bytes]], payload: bytes) -> bytes:
    header = [b"u1", epoch, str(len(pairs)).encode()]
    for name, generation in pairs:
        header += [name, generation]
    return b"\n".join(header) + b"\n" + payload


PAYLOAD = b'{"id":5,"note":"line\\nbreak"}'
CURRENT = entry(EPOCH, list(zip(NAMES, GENS, strict=True)), PAYLOAD)


def test_a_current_entry_gives_its_payload() -> None:
    assert current_payload(CURRENT, EPOCH, NAMES, list(GENS)) == PAYLOAD
    assert judge(CURRENT, EPOCH, dict(zip(NAMES, GENS, strict=True))) == (1, PAYLOAD)


def test_no_namespaces() -> None:
    raw = entry(EPOCH, [], b"null")
    assert current_payload(raw, EPOCH, [], []) == b"null"


@pytest.mark.parametrize(
    ("raw", "epoch", "generations"),
    [
        (CURRENT, b"1700000000000002", GENS),  # the epoch moved
        (CURRENT, EPOCH, [b"18", *GENS[1:]]),  # one generation moved
        (CURRENT, EPOCH, [b"1", *GENS[1:]]),  # a prefix of the stored generation
        (CURRENT, EPOCH, [None, *GENS[1:]]),  # a counter that is gone
        (CURRENT, None, GENS),  # no epoch
        (entry(EPOCH, list(zip(NAMES[:2], GENS[:2], strict=True)), PAYLOAD), EPOCH, GENS),
        (entry(EPOCH, list(zip(NAMES[::-1], GENS[::-1], strict=True)), PAYLOAD), EPOCH, GENS),
        (b"plain text", EPOCH, GENS),
        (None, EPOCH, GENS),
        (CURRENT.decode(), EPOCH, GENS),  # a client that decodes replies: the long way
    ],
    ids=[
        "epoch-moved",
        "generation-moved",
        "generation-prefix",
        "counter-gone",
        "no-epoch",
        "fewer-namespaces",
        "other-order",
        "foreign",
        "absent",
        "text",
    ],
)
def test_anything_else_decides_nothing(
    raw: object, epoch: object, generations: list[object]
) -> None:
    """The shortcut only ever answers a hit the full check would also answer."""
    found = current_payload(raw, epoch, NAMES, list(generations))
    assert found is None
    if raw is not None and epoch is not None:
        status, _ = judge(raw, epoch, dict(zip(NAMES, generations, strict=True)))  # type: ignore[arg-type]
        assert status in {1, INVALID, UNKNOWN}


def test_agrees_with_judge_on_every_mix() -> None:
    """Over stored and current values mixed every way, a shortcut hit is a judged hit."""
    stored = [(b"1", b"2"), (b"10", b"20")]
    for (epoch, gen), (now_epoch, now_gen) in itertools.product(stored, stored):
        raw = entry(epoch, [(NAMES[0], gen)], PAYLOAD)
        shortcut = current_payload(raw, now_epoch, NAMES[:1], [now_gen])
        judged = judge(raw, now_epoch, {NAMES[0]: now_gen})
        assert (shortcut is not None) == (judged[0] == 1)
        if shortcut is not None:
            assert shortcut == judged[1] == PAYLOAD
