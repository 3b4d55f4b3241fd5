"""The conversation as plain data, and its two projections: OpenAI messages for the gateway, chat bubbles for Gradio.

A turn is a dict: the user's text and image paths, then what the gateway streamed back (thinking,
answer, interaction id, model and adapter version) or a readable error. Keeping the turns as the
single source of truth lets regenerate and feedback work on ids the user never has to see, and keeps
both projections pure functions that the tests check without a server or a browser.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

THINKING_TITLE = "Thinking"
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                ".bmp": "image/bmp", ".webp": "image/webp"}


def new_turn(text: str, images: list[str], effort: str) -> dict[str, Any]:
    """A user turn that has not been answered yet."""
    return {"text": text, "images": list(images), "effort": effort, "thinking": "", "answer": "", "id": None,
            "model": None, "version": None, "error": None, "done": False, "feedback": []}


def reset_answer(turn: dict[str, Any]) -> dict[str, Any]:
    """The same question with the answer cleared (for regenerate)."""
    return {**new_turn(turn["text"], turn["images"], turn["effort"])}


def image_part(path: str | Path) -> dict[str, Any]:
    """An OpenAI `image_url` part carrying the file as a base64 data URL (the gateway never reads our disk)."""
    path = Path(path)
    # The gateway sniffs the real format from the bytes; the declared type only has to be an image type.
    mime = _IMAGE_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "image/png"
    if not mime.startswith("image/"):
        mime = "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def user_message(text: str, images: list[str]) -> dict[str, Any]:
    """One OpenAI user message: the images first, then the question (the order the model was trained on)."""
    parts = [image_part(p) for p in images]
    if text:
        parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def api_messages(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's `messages`: every answered earlier turn, then the last turn's question.

    Turns that failed are left out, so one error never poisons the rest of the conversation.
    """
    messages: list[dict[str, Any]] = []
    for turn in turns[:-1]:
        if turn["error"] or not turn["done"]:
            continue
        messages.append(user_message(turn["text"], turn["images"]))
        messages.append({"role": "assistant", "content": turn["answer"]})
    if turns:
        messages.append(user_message(turns[-1]["text"], turns[-1]["images"]))
    return messages


def footer(turn: dict[str, Any]) -> str:
    """The small line under an answer: which adapter version answered, and the interaction id."""
    version = turn["version"] or "base model"
    return (f"<sub>answered by {turn['model'] or '?'} · adapter {version} · effort {turn['effort']}"
            f" · id {turn['id']}</sub>")


def chat_messages(turns: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Gradio `messages` for the Chatbot, and for each message the index of the turn it belongs to.

    The thinking is a "thought" message (metadata title), which Gradio draws as a collapsible
    block: open with a spinner while it streams, closed once the answer starts.
    """
    messages: list[dict[str, Any]] = []
    owners: list[int] = []

    def add(index: int, message: dict[str, Any]) -> None:
        messages.append(message)
        owners.append(index)

    for i, turn in enumerate(turns):
        content: list[Any] = [{"path": p} for p in turn["images"]]
        if turn["text"]:
            content.append(turn["text"])
        add(i, {"role": "user", "content": content})
        if turn["thinking"]:
            thinking_done = bool(turn["answer"]) or turn["done"] or bool(turn["error"])
            add(i, {"role": "assistant", "content": turn["thinking"],
                    "metadata": {"title": THINKING_TITLE, "status": "done" if thinking_done else "pending"}})
        if turn["error"]:
            add(i, {"role": "assistant", "content": f"⚠️ {turn['error']}"})
        elif turn["answer"] or turn["done"]:
            text = turn["answer"] or "*(empty answer)*"
            add(i, {"role": "assistant", "content": f"{text}\n\n{footer(turn)}" if turn["done"] else text})
        elif not turn["thinking"]:
            add(i, {"role": "assistant", "content": "…"})  # a placeholder until the first token arrives
    return messages, owners


def answered(turns: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Dropdown choices (label, turn index) for the answers that can receive feedback."""
    choices = []
    for i, turn in enumerate(turns):
        if turn["id"] and turn["done"]:
            question = " ".join(turn["text"].split()) or f"{len(turn['images'])} image(s)"  # options on one line
            short = question if len(question) <= 40 else question[:39] + "…"
            choices.append((f"#{i + 1} {short} ({turn['version'] or 'base'})", i))
    return choices
