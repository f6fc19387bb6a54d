"""stream state: the worker's minute buckets, camera state and applied offsets live here, not in Faust tables

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

Private to the stream worker (``streams/state.py`` says why); the analyst
role is not given them.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("stream_offsets", "stream_buckets", "stream_cameras")


def upgrade() -> None:
    op.create_table(
        "stream_offsets",
        sa.Column("app", sa.String(128), primary_key=True, comment="the stream app (Kafka consumer group)"),
        sa.Column("topic", sa.String(249), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, comment="first offset not yet applied; null: none applied yet"),
        sa.Column("stream_time", sa.BigInteger, nullable=False, server_default="0", comment="newest append time applied, ms"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        comment="Stream worker state: per partition of the events topic, how far it is applied.",
    )
    op.create_table(
        "stream_buckets",
        sa.Column("app", sa.String(128), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True, comment="camera|table|dims|minute"),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("minute", sa.BigInteger, nullable=False, comment="start of the minute, ms"),
        sa.Column("state", JSONB, nullable=False, comment="running sums and the seqs folded into them"),
        comment="Stream worker state: per-minute sums and their seqs, until the minute is closed.",
    )
    op.create_index("ix_stream_buckets_prune", "stream_buckets", ["app", "partition", "minute"])
    op.create_table(
        "stream_cameras",
        sa.Column("app", sa.String(128), primary_key=True),
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("state", JSONB, nullable=False, comment="status, seqs received, open alerts"),
        comment="Stream worker state: per camera, what the status and alert rules need.",
    )
    # The worker prunes closed minutes, so it may delete here (and only here).
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TABLES)} TO fleetsight_writer")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
