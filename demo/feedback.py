"""The body of POST /v1/feedback from what the user clicked or typed, checked before it leaves the demo."""

from __future__ import annotations

from typing import Any


def feedback_payload(interaction_id: str | None, thumbs: str | None = None, rating: int | str | None = None,
                     correction: str | None = None) -> dict[str, Any]:
    """`{"id", "thumbs"?, "rating"?, "correction"?}`; ValueError with a user-facing message if nothing to send."""
    if not interaction_id:
        raise ValueError("Pick an answer first: there is no answered question to give feedback on yet.")
    body: dict[str, Any] = {"id": interaction_id}
    if thumbs:
        if thumbs not in ("up", "down"):
            raise ValueError(f"thumbs must be 'up' or 'down', not {thumbs!r}")
        body["thumbs"] = thumbs
    if rating not in (None, ""):
        # Radio buttons hand over strings; the gateway wants an int 1..5.
        value = int(rating)
        if not 1 <= value <= 5:
            raise ValueError(f"a rating is 1 to 5 stars, not {value}")
        body["rating"] = value
    if correction and correction.strip():
        body["correction"] = correction.strip()
    if len(body) == 1:
        raise ValueError("Nothing to send: choose thumbs, a rating, or type the correct answer.")
    return body


def describe_feedback(body: dict[str, Any], label: str) -> str:
    """The confirmation line shown after the gateway stored the feedback."""
    parts = []
    if "thumbs" in body:
        parts.append("👍" if body["thumbs"] == "up" else "👎")
    if "rating" in body:
        parts.append("★" * body["rating"] + "☆" * (5 - body["rating"]))
    if "correction" in body:
        parts.append(f"correct answer “{body['correction']}”")
    return f"Saved {' '.join(parts)} for answer {label} ({body['id']})."
