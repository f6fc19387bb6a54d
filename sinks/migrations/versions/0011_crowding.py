"""the crowding signal: people overlapping each other per camera and minute; the crowded alert

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

Health reports now say how many people the detector saw and how many of
them overlapped another person (edge/crowding.py). The health tables
(minute, hour, day) keep both sums and their share, ``crowding``;
``camera_status`` the share in the last report; ``alerts.kind`` lists
``crowded``, opened when that share passes the worker's limit. Rows from
before stay at 0 people (and no share).
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD_KINDS = "offline, backlog, occupancy, clock_skew, reconcile, video_down, tamper or overloaded"
KINDS = "offline, backlog, occupancy, clock_skew, reconcile, video_down, tamper, overloaded or crowded"
HEALTH_TABLES = ("camera_minute_health", "camera_hour_health", "camera_day_health")
# As in sinks/models.py (a migration stays as it was written; these words are its own).
PEOPLE_SEEN = "person detections sure enough to start a track, over the detector runs reported"
PEOPLE_OVERLAPPING = "of those, overlapping another person by a fifth of their area or more"
CROWDING = "people_overlapping / people_seen: above 0.2 people hide each other and counts run low (README)"
STATUS_CROWDING = "share of people seen overlapping another in its last health report; over the alert limit: crowded"


def upgrade() -> None:
    for table in HEALTH_TABLES:
        # On a partitioned table the columns reach every partition; a constant
        # default is a catalogue change, not a rewrite of the rows.
        op.add_column(table, sa.Column("people_seen", sa.BigInteger, nullable=False, server_default="0", comment=PEOPLE_SEEN))
        op.add_column(table, sa.Column("people_overlapping", sa.BigInteger, nullable=False, server_default="0", comment=PEOPLE_OVERLAPPING))
        op.add_column(table, sa.Column("crowding", sa.Float, comment=CROWDING))
    op.add_column("camera_status", sa.Column("crowding", sa.Float, comment=STATUS_CROWDING))
    op.alter_column("alerts", "kind", existing_type=sa.String(32), existing_nullable=False, comment=KINDS, existing_comment=OLD_KINDS)


def downgrade() -> None:
    op.alter_column("alerts", "kind", existing_type=sa.String(32), existing_nullable=False, comment=OLD_KINDS, existing_comment=KINDS)
    op.drop_column("camera_status", "crowding")
    for table in reversed(HEALTH_TABLES):
        for column in ("crowding", "people_overlapping", "people_seen"):
            op.drop_column(table, column)
