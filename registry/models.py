"""ORM tables of the registry: base models and the checkpoints checked against them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from registry.db import Base


def utcnow() -> datetime:
    """Timezone-aware now, the one clock every table uses."""
    return datetime.now(UTC)


class BaseModel(Base):
    """A pretrained checkpoint candidates must descend from, pinned to a revision."""

    __tablename__ = "base_models"
    __table_args__ = (
        UniqueConstraint("source", "repo_id", "revision", name="uq_base_models_source_repo_rev"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[str] = mapped_column(String(255), index=True)
    revision: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(1024))
    architecture: Mapped[str | None] = mapped_column(String(128))
    config_fingerprint: Mapped[str | None] = mapped_column(String(64))
    tokenizer_fingerprint: Mapped[str | None] = mapped_column(String(64))
    tensor_fingerprint: Mapped[str | None] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    checkpoints: Mapped[list[Checkpoint]] = relationship(back_populates="base")


class Checkpoint(Base):
    """One repo checked against one base: its pinned revision, verdict and Hub metadata.

    A repo has one row per (base, source); a new revision updates that row.
    """

    __tablename__ = "checkpoints"
    __table_args__ = (
        UniqueConstraint("base_id", "source", "repo_id", name="uq_checkpoints_base_source_repo"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="CASCADE"), index=True)
    repo_id: Mapped[str] = mapped_column(String(255), index=True)
    revision: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    reason_code: Mapped[str | None] = mapped_column(String(32), index=True)
    architecture: Mapped[str | None] = mapped_column(String(128))
    model_type: Mapped[str | None] = mapped_column(String(64))
    config_fingerprint: Mapped[str | None] = mapped_column(String(64))
    tokenizer_fingerprint: Mapped[str | None] = mapped_column(String(64))
    tensor_fingerprint: Mapped[str | None] = mapped_column(String(64))
    lineage_distance: Mapped[float | None] = mapped_column(Float)
    weights_verified: Mapped[bool] = mapped_column(default=False)
    card_base_model: Mapped[list | None] = mapped_column(JSON)
    card_datasets: Mapped[list | None] = mapped_column(JSON)
    card_license: Mapped[str | None] = mapped_column(String(128))
    card_tags: Mapped[list | None] = mapped_column(JSON)
    downloads: Mapped[int | None] = mapped_column(BigInteger)
    likes: Mapped[int | None] = mapped_column(Integer)
    last_modified: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    base: Mapped[BaseModel] = relationship(back_populates="checkpoints")

    def as_dict(self) -> dict:
        """A JSON-ready dict of the row (with the base's repo id and revision)."""
        row = {c.name: getattr(self, c.name) for c in self.__table__.columns}
        for key, value in row.items():
            if isinstance(value, datetime):
                row[key] = value.isoformat()
        row["base_repo_id"] = self.base.repo_id if self.base else None
        row["base_revision"] = self.base.revision if self.base else None
        return row
