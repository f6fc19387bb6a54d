"""camera_minute_counts: objects seen per camera, class and minute

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "camera_minute_counts",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("object_class", sa.String(48), primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True, comment="start of the minute, UTC"),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
            comment="when the sink last changed the row",
        ),
        comment="Objects seen (tracks started) per camera, object class and event-time minute.",
    )
    op.create_index("ix_camera_minute_counts_site_minute", "camera_minute_counts", ["site", "minute"])


def downgrade() -> None:
    op.drop_table("camera_minute_counts")
