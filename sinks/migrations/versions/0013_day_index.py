"""day tables: an index that leads with the day

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

A question about one day of every camera (today's crossings, zone entries,
the day's top 20) read the whole year's partition of a day table: its
keys lead with the camera and its other index with the site (issue 38,
bench/sql_scale.py). Each day table gets an index on ``day``; made on the
partitioned table, it is made on every partition, and on those to come.
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

DAY_TABLES = ("camera_day_counts", "line_day_crossings", "zone_day_stats", "camera_day_health")


def upgrade() -> None:
    for table in DAY_TABLES:
        op.create_index(f"ix_{table}_day", table, ["day"])


def downgrade() -> None:
    for table in DAY_TABLES:
        op.drop_index(f"ix_{table}_day", table_name=table)
