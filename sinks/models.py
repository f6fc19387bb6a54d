"""SQLAlchemy 2.0 models of the public SQL tables (the query contract)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class CameraMinuteCount(Base):
    """Objects seen (tracks started) per camera, object class and event-time minute."""

    __tablename__ = "camera_minute_counts"

    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    object_class: Mapped[str] = mapped_column(String(48), primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True, comment="start of the minute, UTC")
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), comment="when the sink last changed the row"
    )

    __table_args__ = (
        Index("ix_camera_minute_counts_site_minute", "site", "minute"),
        {"comment": "Objects seen (tracks started) per camera, object class and event-time minute."},
    )
