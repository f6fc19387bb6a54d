"""camera frames missed by a busy node; the overloaded alert

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

``camera_status`` gains what a node's health events now say about the live
frames it had no time for (edge/pipeline.py): how many in the last report,
and their share of the frames that arrived. ``alerts.kind`` lists
``overloaded``, opened when that share passes the worker's limit.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OLD_KINDS = "offline, backlog, occupancy, clock_skew, reconcile, video_down or tamper"
KINDS = "offline, backlog, occupancy, clock_skew, reconcile, video_down, tamper or overloaded"
COLUMNS = (
    ("frames_missed", sa.BigInteger, "live frames it missed (busy) between its last two health reports"),
    ("frames_missed_share", sa.Float, "frames_missed over the frames that arrived in that time (0-1); over the alert limit: overloaded"),
)


def upgrade() -> None:
    for name, type_, comment in COLUMNS:
        op.add_column("camera_status", sa.Column(name, type_, comment=comment))
    op.alter_column("alerts", "kind", existing_type=sa.String(32), existing_nullable=False, comment=KINDS, existing_comment=OLD_KINDS)


def downgrade() -> None:
    op.alter_column("alerts", "kind", existing_type=sa.String(32), existing_nullable=False, comment=OLD_KINDS, existing_comment=KINDS)
    for name, _, _ in reversed(COLUMNS):
        op.drop_column("camera_status", name)
