"""The Gradio Blocks app: chat with images, streamed thinking, feedback per answer, and the served versions.

Every handler goes through `Gateway` (HTTP only). The conversation lives in a `gr.State` list of
turns (see `conversation`); the Chatbot is redrawn from it on every streamed piece, so the
thinking block, the answer and its footer (adapter version, interaction id) always agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import gradio as gr  # this module is imported only when the demo runs (see cli.py)

from .conversation import answered, api_messages, chat_messages, new_turn, reset_answer
from .errors import describe_error
from .feedback import describe_feedback, feedback_payload
from .gateway import Gateway
from .versions import HEADERS, read_metrics, version_rows

EFFORTS = ["auto", "none", "minimal", "low", "medium", "high", "xhigh", "max"]  # the API's reasoning_effort values
# Asking is greedy (the tiny model's best answers); regenerate samples, or it would repeat itself.
ASK_TEMPERATURE, REGENERATE_TEMPERATURE = 0.0, 1.0
INTRO = """# OpenVLThinkerV2 — chat about images
Upload one or more images, ask a question, and watch the model think. Rate its answers: 👍/👎 on a
message, or stars and the correct answer on the right. Graded answers feed the online RL loop, which
trains new adapter versions and hot-swaps them in (see *Served versions*)."""


def build_app(gateway: Gateway, examples: list[dict], rl_metrics: str | Path | None = None,
              refresh_s: float = 15.0):
    """The demo as a `gr.Blocks` (not launched)."""
    def _outputs(turns: list[dict], box: Any = None) -> tuple:
        messages, _ = chat_messages(turns)
        choices = answered(turns)
        target = gr.update(choices=choices, value=choices[-1][1] if choices else None)
        return messages, turns, gr.skip() if box is None else box, target

    def _stream(turns: list[dict], temperature: float, box: Any = None) -> Iterator[tuple]:
        turn = turns[-1]
        yield _outputs(turns, box)
        try:
            for delta in gateway.stream_chat(api_messages(turns), turn["effort"], temperature):
                turn.update(id=delta.id, model=delta.model, version=delta.version)
                turn["thinking"] += delta.thinking
                turn["answer"] += delta.answer
                yield _outputs(turns)
            turn["done"] = True
        except Exception as exc:  # noqa: BLE001 - whatever failed, the user gets a sentence and the demo goes on
            turn["error"] = describe_error(exc, gateway.endpoint)
        yield _outputs(turns)

    def ask(box: dict | None, effort: str, turns: list[dict]) -> Iterator[tuple]:
        """Send the typed question and uploaded images; stream the answer into the chat."""
        box = box or {}
        text, files = (box.get("text") or "").strip(), list(box.get("files") or [])
        if not text and not files:
            gr.Warning("Type a question or add an image first.")
            yield _outputs(turns)
            return
        turns = [*turns, new_turn(text, files, effort)]
        yield from _stream(turns, ASK_TEMPERATURE, box={"text": "", "files": []})

    def regenerate(effort: str, turns: list[dict]) -> Iterator[tuple]:
        """Ask the last question again (sampled, with the effort now selected)."""
        if not turns:
            gr.Warning("Nothing to regenerate yet.")
            yield _outputs(turns)
            return
        turns = [*turns[:-1], {**reset_answer(turns[-1]), "effort": effort}]
        yield from _stream(turns, REGENERATE_TEMPERATURE)

    def send(target: int | None, thumbs: str | None, rating: Any, correction: str | None,
             turns: list[dict]) -> tuple[str, Any, Any]:
        """POST the feedback for the chosen answer; a readable line either way."""
        if target is None or not 0 <= int(target) < len(turns):
            return "⚠️ Pick an answer first.", gr.skip(), gr.skip()
        turn = turns[int(target)]
        try:
            body = feedback_payload(turn["id"] if turn["done"] else None, thumbs, rating, correction)
            gateway.feedback(body)
        except Exception as exc:  # noqa: BLE001 - shown to the user, who may retry
            return f"⚠️ {describe_error(exc, gateway.endpoint)}", gr.skip(), gr.skip()
        turn["feedback"].append(body)
        return describe_feedback(body, f"#{int(target) + 1}"), None, ""

    def on_like(turns: list[dict], data: gr.LikeData) -> tuple[str, Any]:
        """The Chatbot's 👍/👎 on any message of a turn rates that turn's answer."""
        _, owners = chat_messages(turns)
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        thumbs = {True: "up", "Like": "up", False: "down", "Dislike": "down"}.get(data.liked)
        if not 0 <= index < len(owners):
            return "", gr.skip()
        if thumbs is None:  # a second click clears the icon; the API keeps what was sent (feedback is append-only)
            return "Un-clicking does not delete feedback already sent (the store keeps every rating).", gr.skip()
        status, _, _ = send(owners[index], thumbs, None, None, turns)
        return status, owners[index]

    def clear() -> tuple:
        """Start a new conversation."""
        return _outputs([]) + ("",)

    def refresh() -> tuple[list[list[str]], str]:
        """Served versions from GET /v1/models with their RL rewards from metrics.jsonl."""
        try:
            models = gateway.models()
            adapters = gateway.adapters()
        except Exception as exc:  # noqa: BLE001
            return [], f"⚠️ {describe_error(exc, gateway.endpoint)}"
        metrics = read_metrics(rl_metrics)
        promoted = adapters.get("promoted") if adapters else None
        note = f"RL rounds logged: {len(metrics)}" if rl_metrics else "RL metrics: not configured (--rl-metrics)"
        return version_rows(models, metrics, promoted), note

    with gr.Blocks(title="OpenVLThinkerV2 demo") as app:
        turns = gr.State([])
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=520, elem_id="chat",
                                     feedback_options=("Like", "Dislike"))
                box = gr.MultimodalTextbox(file_types=["image"], file_count="multiple", sources=["upload"],
                                           placeholder="Ask about your images… (Enter sends)", show_label=False,
                                           elem_id="ask")
                with gr.Row():
                    effort = gr.Radio(EFFORTS, value="auto", label="Reasoning effort", scale=3)
                    regen = gr.Button("Regenerate", scale=1)
                    reset = gr.Button("New chat", scale=1)
            with gr.Column(scale=2):
                with gr.Group():
                    gr.Markdown("### Feedback on an answer")
                    target = gr.Dropdown(choices=[], label="Answer to rate", interactive=True)
                    with gr.Row():
                        up = gr.Button("👍 Good", elem_id="thumbs-up")
                        down = gr.Button("👎 Bad", elem_id="thumbs-down")
                    rating = gr.Radio(["1", "2", "3", "4", "5"], label="Rating (stars)", elem_id="feedback-stars")
                    correction = gr.Textbox(label="Correct answer", placeholder="what it should have said",
                                            elem_id="feedback-correction")
                    send_btn = gr.Button("Send rating / correct answer", variant="primary", elem_id="feedback-send")
                    status = gr.Markdown(elem_id="feedback-status")
                example_set = gr.Examples(examples, inputs=[box], label="Examples (one click asks it)")
        # Full width: its five columns do not fit beside the chat (the last ones were cut off there).
        with gr.Accordion("Served versions", open=True, elem_id="versions"):
            table = gr.Dataframe(headers=HEADERS, interactive=False)
            with gr.Row():
                note = gr.Markdown()
                refresh_btn = gr.Button("Refresh", size="sm", scale=0)

        chat_out = [chatbot, turns, box, target]
        box.submit(ask, [box, effort, turns], chat_out, api_name="chat", concurrency_limit=16)
        example_set.load_input_event.then(ask, [box, effort, turns], chat_out, api_visibility="private",
                                          concurrency_limit=16)
        regen.click(regenerate, [effort, turns], chat_out, api_name="regenerate", concurrency_limit=16)
        chatbot.retry(regenerate, [effort, turns], chat_out, api_visibility="private", concurrency_limit=16)
        reset.click(clear, None, [*chat_out, status], api_name="clear")
        up.click(lambda t, s: send(t, "up", None, None, s)[0], [target, turns], status, api_name="thumbs_up")
        down.click(lambda t, s: send(t, "down", None, None, s)[0], [target, turns], status, api_name="thumbs_down")
        send_btn.click(lambda t, r, c, s: send(t, None, r, c, s), [target, rating, correction, turns],
                       [status, rating, correction], api_name="feedback")
        chatbot.like(on_like, [turns], [status, target], api_visibility="private")
        refresh_btn.click(refresh, None, [table, note], api_name="versions")
        gr.Timer(refresh_s).tick(refresh, None, [table, note], api_visibility="private")
        app.load(refresh, None, [table, note], api_visibility="private")
    return app
