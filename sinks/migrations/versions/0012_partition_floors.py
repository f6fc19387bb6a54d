"""partition floors: how far back each partitioned table was dropped, and at what retention

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Partition maintenance (sinks/partitions.py) writes, per table, the end of
the newest partition it dropped and the retention it dropped it at. No
maintenance makes a partition before that again: a sink with a longer
``FLEETSIGHT_RETENTION_DAYS`` than the one that dropped re-made the days
the other had dropped for a late row, and the other dropped them again
(issue 38). A process whose retention differs from the one recorded is
told so in its log.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partition_floors",
        sa.Column("table_name", sa.String(64), primary_key=True),
        sa.Column("dropped_before", sa.DateTime(timezone=True), nullable=False,
                  comment="the end of the newest partition dropped: nothing before it is made again"),
        sa.Column("retention_days", sa.Integer, nullable=False, comment="the retention that drop was made at"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        comment="How far back each time-partitioned table was dropped (sinks/partitions.py).",
    )
    op.execute("GRANT SELECT ON partition_floors TO fleetsight_writer, fleetsight_analyst")


def downgrade() -> None:
    op.drop_table("partition_floors")
