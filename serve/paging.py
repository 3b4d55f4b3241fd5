"""Cursor pages over a list held in memory, as OpenAI's list endpoints return them (`after`, `limit`)."""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from .errors import APIError

T = TypeVar("T")


def page_after(items: Sequence[T], after: str | None, limit: int, id_of: Callable[[T], str],
               owner: str) -> tuple[list[T], bool]:
    """The `limit` items after the one with id `after` (from the start without it), and whether more follow.

    An `after` that names no item of `owner` is a 400 naming the parameter."""
    start = 0
    if after is not None:
        ids = [id_of(item) for item in items]
        if after not in ids:
            raise APIError(400, f"'after' is not an item of {owner[:80]!r}: {after[:80]!r}.", param="after",
                           code="invalid_value")
        start = ids.index(after) + 1
    return list(items[start:start + limit]), start + limit < len(items)


def page_fields(page: Sequence[Any], more: bool) -> dict[str, Any]:
    """The fields of an OpenAI list object for a page of items that have an `id`."""
    return {"data": list(page), "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None, "has_more": more}
