"""Cursor pages, as OpenAI's list endpoints return them: the list object, and paging a list held in memory."""

from __future__ import annotations

from typing import Any, Generic, Literal, Sequence, TypeVar

from pydantic import BaseModel

from .errors import APIError

T = TypeVar("T")


class CursorPage(BaseModel, Generic[T]):
    """An OpenAI list object: one page of items that have an `id`, its first and last ids, and whether more follow."""

    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, page: Sequence[Any], more: bool):
        """The list object of `page`."""
        return cls(data=list(page), first_id=page[0].id if page else None, last_id=page[-1].id if page else None,
                   has_more=more)


def page_after(items: Sequence[T], after: str | None, limit: int, owner: str,
               descending: bool = False) -> tuple[list[T], bool]:
    """The `limit` items (in reverse order if `descending`) after the one with id `after` (from the start
    without it), and whether more follow.

    An `after` that names no item of `owner` is a 400 naming the parameter."""
    ordered = list(reversed(items)) if descending else list(items)
    start = 0
    if after is not None:
        ids = [item.id for item in ordered]
        if after not in ids:
            raise APIError(400, f"'after' is not an item of {owner[:80]!r}: {after[:80]!r}.", param="after",
                           code="invalid_value")
        start = ids.index(after) + 1
    return ordered[start:start + limit], start + limit < len(ordered)
