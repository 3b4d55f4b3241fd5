"""SQLAlchemy 2 tables: one Interaction row per returned choice, Feedback rows pointing at one.

Images are not stored in rows: messages keep `{"type": "image", "sha256": ...}` references to
the content-addressed files beside the database (see `blobs.py`). `seq` is the monotonically
increasing cursor the RL loop pages with; `id` is the chat completion id shared by the `n`
choices of one request.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Interaction(Base):
    __tablename__ = "interactions"
    __table_args__ = (UniqueConstraint("id", "choice_index", name="uq_interaction_choice"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), index=True)
    choice_index: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[float] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(200))  # the concrete name served (alias@version or base)
    adapter_version: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    effort: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    budget: Mapped[int] = mapped_column(Integer)
    budget_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # messages (image hashes) + sampling params
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    problem_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    task_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    has_reference: Mapped[bool] = mapped_column(Boolean, default=False)
    thinking: Mapped[str] = mapped_column(Text, default="")
    answer: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    prompt_token_ids: Mapped[list[int]] = mapped_column(JSON)
    completion_token_ids: Mapped[list[int]] = mapped_column(JSON)
    logprobs: Mapped[list[float]] = mapped_column(JSON)  # behaviour logprobs of the completion tokens
    finish_reason: Mapped[str] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    reasoning_tokens: Mapped[int] = mapped_column(Integer)
    latency_s: Mapped[float] = mapped_column(Float)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)

    feedback: Mapped[list["Feedback"]] = relationship(back_populates="interaction", order_by="Feedback.seq",
                                                      lazy="selectin")


class Feedback(Base):
    __tablename__ = "feedback"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    interaction_seq: Mapped[int] = mapped_column(ForeignKey("interactions.seq"), index=True)
    created: Mapped[float] = mapped_column(Float)
    thumbs: Mapped[str | None] = mapped_column(String(8), nullable=True)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Who sent it, as a sha256 prefix of the key (never the key), and whether that key's feedback may train.
    # NULL in rows written before these columns existed: their sender is unknown, so the loop skips them.
    key_hash: Mapped[str | None] = mapped_column(String(16), nullable=True)
    trusted: Mapped[bool | None] = mapped_column(Boolean, nullable=True)

    interaction: Mapped[Interaction] = relationship(back_populates="feedback")


Index("ix_interactions_gradable", Interaction.has_reference, Interaction.seq)
