"""Split a completion into thinking and answer, whole (`split_text`) or incrementally (`ReasoningSplitter`).

The model writes `<thinking>…</thinking><answer>…</answer>`; clients get the thinking as
`reasoning_content` and the answer as `content`, tags never shown. Pure string code.

Final split (`split_text`, what a non-streamed response and the store get):
  thinking = the text inside the thinking block(s) (an unclosed block runs to the end);
  answer   = the text inside `<answer>` if the model wrote one, else the text outside thinking.
Streaming (`ReasoningSplitter.feed`) emits the same pieces as tokens arrive. Tags may be split
across tokens, so a tail that could still become a tag is held back until the next token decides.
Whitespace at the edges of each block is held too, so the concatenated deltas equal the final
split whenever the output is well formed. Text outside any block after a thinking block has
closed is held until an `<answer>` tag drops it or the end of the stream sends it: a model in the
think-then-answer format writes `<answer>` next, so nothing waits in the normal case, and a stray
phrase between the blocks never streams as content the final answer leaves out. The one case it
cannot know in advance: stray text before the first thinking block or before a late `<answer>`
with no thinking is streamed as content (a plain untagged answer must stream as it comes), but
left out of the final answer.
"""

from __future__ import annotations

from typing import Literal

from openvlthinker.thinking import THINK_CLOSE, THINK_OPEN

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

Kind = Literal["reasoning", "content"]
_OUT, _THINK, _ANSWER = "outside", "thinking", "answer"


class ReasoningSplitter:
    """Incremental thinking/answer splitter: `feed(text)` and `finish()` return `[(kind, text), ...]`.

    prefix: assistant text the completion continues (a prefilled `<thinking>`): it sets the
    starting state but is not part of the output.
    """

    def __init__(self, prefix: str = "") -> None:
        self.state = _OUT
        self.buffer = ""  # undecided text (possible tag prefix)
        self.pending_ws = ""  # whitespace held inside the current block
        self.block_started = False  # emitted non-whitespace in the current block yet
        self.answered = False  # an <answer> block was opened: later outside text is not the answer
        self.thought = False  # a thinking block has closed: outside text waits for <answer> or the end
        self.held: list[tuple[Kind, str]] = []  # that waiting text, as the deltas it would have been
        self.reasoning: list[str] = []
        self.content: list[str] = []
        if prefix:
            self.feed(prefix)
            self.reasoning, self.content = [], []

    def feed(self, text: str) -> list[tuple[Kind, str]]:
        self.buffer += text
        out: list[tuple[Kind, str]] = []
        while self.buffer:
            idx = self.buffer.find("<")
            if idx == -1:
                self._emit(self.buffer, out)
                self.buffer = ""
                break
            if idx > 0:
                self._emit(self.buffer[:idx], out)
                self.buffer = self.buffer[idx:]
            tag = next((t for t in TAGS if self.buffer.startswith(t)), None)
            if tag is not None:
                self._on_tag(tag)
                self.buffer = self.buffer[len(tag):]
                continue
            if any(t.startswith(self.buffer) for t in TAGS):
                break  # "<thi": could still become a tag; wait for the next token
            self._emit("<", out)  # a "<" that starts no tag is ordinary text
            self.buffer = self.buffer[1:]
        return out

    def finish(self) -> list[tuple[Kind, str]]:
        """Flush what is held at the end of the stream (an unfinished tag prefix is plain text)."""
        out: list[tuple[Kind, str]] = []
        if self.buffer:
            self._emit(self.buffer, out)
            self.buffer = ""
        return self._release() + out

    @property
    def thinking_text(self) -> str:
        return "".join(self.reasoning)

    @property
    def content_text(self) -> str:
        return "".join(self.content)

    def _kind(self) -> Kind | None:
        if self.state == _THINK:
            return "reasoning"
        if self.state == _ANSWER or not self.answered:
            return "content"
        return None  # text after the answer block is not part of the answer

    def _emit(self, text: str, out: list[tuple[Kind, str]]) -> None:
        kind = self._kind()
        if kind is None or not text:
            return
        stripped = text.rstrip()
        trailing = text[len(stripped):]
        if not stripped:  # whitespace only: hold it until we know more text follows in this block
            self.pending_ws += text
            return
        piece = stripped if not self.block_started else self.pending_ws + stripped
        if not self.block_started:
            piece = piece.lstrip()
        self.pending_ws = trailing
        self.block_started = True
        (self.reasoning if kind == "reasoning" else self.content).append(piece)
        if kind == "content" and self.state == _OUT and self.thought:
            out = self.held  # untagged text after thinking: the answer only if no <answer> follows
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + piece)
        else:
            out.append((kind, piece))

    def _on_tag(self, tag: str) -> None:
        if tag == THINK_OPEN and self.state != _ANSWER:
            if not self.answered:
                self.content.clear()  # untagged answers are the text after the thinking block
                self.held.clear()
            self._enter(_THINK)
        elif tag == THINK_CLOSE and self.state == _THINK:
            self.thought = True
            self._enter(_OUT)
        elif tag == ANSWER_OPEN and self.state != _THINK:
            if not self.answered:
                self.content.clear()  # the final answer is the tagged one (streams cannot take back)
                self.held.clear()  # what waited after thinking was not the answer after all
            self.answered = True
            self._enter(_ANSWER)
        elif tag == ANSWER_CLOSE and self.state == _ANSWER:
            self._enter(_OUT)
        # Any other tag (a stray close, `<answer>` inside thinking) is dropped, never shown.

    def _release(self) -> list[tuple[Kind, str]]:
        held, self.held = self.held, []
        return held

    def _enter(self, state: str) -> None:
        self.state, self.pending_ws, self.block_started = state, "", False


def split_text(text: str, prefix: str = "") -> tuple[str, str]:
    """`(thinking, answer)` of a whole completion, tags stripped (see the module docstring)."""
    splitter = ReasoningSplitter(prefix)
    splitter.feed(text)
    splitter.finish()
    return splitter.thinking_text, splitter.content_text
