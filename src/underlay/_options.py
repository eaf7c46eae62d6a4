"""Execution option names shared by `Database` and the repositories (no imports needed)."""

from __future__ import annotations

__all__ = ["NO_BEGIN"]

#: Set on the engines read-only sessions without a snapshot use: no ``BEGIN``, each
#: statement runs on its own (so no server-side cursor can stay open across statements).
NO_BEGIN = "underlay_no_begin"
