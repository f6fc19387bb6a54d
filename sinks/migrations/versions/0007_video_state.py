"""camera video state, reconnects, video lost, tamper

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

``camera_status`` gains what the node's health events now say about its
video (edge/capture.py, edge/tamper.py); ``alerts.kind`` lists the kinds.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

KIND_COMMENT = "offline, backlog, occupancy, clock_skew, reconcile, video_down or tamper"
COLUMNS = (
    ("video_state", sa.String(16), "ok, stalled (open, no frames) or down (cannot open, broke), from its last health report"),
    ("video_reconnects", sa.BigInteger, "new connections to its video stream since the node started"),
    ("video_lost_s", sa.Float, "seconds of video missed since the node started"),
    ("tamper", sa.String(64), "blocked, moved, defocused (comma-separated) against the view it learnt at start; null: none"),
)


def upgrade() -> None:
    for name, type_, comment in COLUMNS:
        op.add_column("camera_status", sa.Column(name, type_, comment=comment))
    op.alter_column("alerts", "kind", existing_type=sa.String(32), existing_nullable=False, comment=KIND_COMMENT,
                    existing_comment="offline, backlog or occupancy")


def downgrade() -> None:
    op.alter_column("alerts", "kind", existing_type=sa.String(32), existing_nullable=False, comment="offline, backlog or occupancy",
                    existing_comment=KIND_COMMENT)
    for name, _, _ in reversed(COLUMNS):
        op.drop_column("camera_status", name)
