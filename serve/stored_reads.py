"""What the stored-interaction endpoints share: stored message parts back as chat parts (images as
data: URLs), and deleting a stored interaction on the store's writer thread."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from .errors import not_found
from .store import Store
from .store.blobs import BlobStore
from .store.writer import StoreWriter


def image_url(blobs: BlobStore, part: dict[str, Any], owner: str, param: str) -> str:
    """A stored image part (its sha256) as the data: URL it was sent as; a 404 naming `param` if it is gone."""
    url = blobs.data_url(part["sha256"])
    if url is None:
        raise not_found(f"An image of {owner} is missing from the image store.", param, "image_not_found")
    return url


def chat_parts(blobs: BlobStore, parts: list[dict[str, Any]], owner: str, param: str) -> list[dict[str, Any]]:
    """A stored message's parts (text, or an image's sha256) as chat content parts again."""
    return [{"type": "image_url", "image_url": {"url": image_url(blobs, part, owner, param)}}
            if part["type"] == "image" else {"type": "text", "text": part["text"]} for part in parts]


async def delete_stored(store: Store, writer: StoreWriter, interaction_id: str,
                        lookup: Callable[[], Awaitable[Any]]) -> None:
    """Delete an interaction and its feedback, in order with the interactions being logged.

    `lookup` raises the endpoint's 404 when the id is not one it serves; it runs again when a
    concurrent request deleted the rows first, so that request's loser gets the 404 too."""
    await lookup()
    if not await asyncio.wrap_future(writer.call(lambda: store.delete_interaction(interaction_id))):
        await lookup()
