"""Loader options added by session hooks, without a new statement on every execution.

The soft-delete and tenant hooks add a loader option to each ORM statement, which clones
it; SQLAlchemy then computes the clone's cache key anew. A statement its owner executes
again and again (the repository's primary-key read) is marked with `REUSABLE`: the hooks
then hand out one memoized variant per statement and option, whose cache key SQLAlchemy
computes once and keeps.
"""

from __future__ import annotations

from typing import Any

__all__ = ["REUSABLE", "with_option"]

#: The execution option marking a statement that is executed many times as the same object.
REUSABLE = "underlay_reusable"

# (statement, option) -> the statement with the option. Bounded: the reusable statements
# are few (one per mapped class), but a tenant option exists per tenant.
_VARIANTS: dict[tuple[Any, Any], Any] = {}
_MAX_VARIANTS = 8192


def with_option(statement: Any, option: Any, execution_options: Any) -> Any:
    """Return ``statement.options(option)``, memoized when the statement is `REUSABLE`.

    Args:
        statement: The statement being executed.
        option: The loader option to add (an object the caller keeps, so the key is stable).
        execution_options: The execution's merged options (``ORMExecuteState``'s).

    Returns:
        The statement with the option.
    """
    if not execution_options.get(REUSABLE):
        return statement.options(option)
    key = (statement, option)
    variant = _VARIANTS.get(key)
    if variant is None:
        if len(_VARIANTS) >= _MAX_VARIANTS:
            _VARIANTS.clear()
        variant = _VARIANTS[key] = statement.options(option)
    return variant
