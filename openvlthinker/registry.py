"""Name -> function tables (advantage estimators, graders) with one lookup rule."""

from __future__ import annotations

from typing import Mapping, TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], key: object, kind: str) -> T:
    """`table[key]`, or a ValueError naming the `kind` and listing every valid key."""
    try:
        return table[key]  # type: ignore[index]
    except (KeyError, TypeError):
        valid = ", ".join(repr(k) for k in table)
        raise ValueError(f"unknown {kind} {key!r}; valid: {valid}") from None
