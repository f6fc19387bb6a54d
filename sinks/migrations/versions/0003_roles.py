"""roles: fleetsight_writer may write the tables, fleetsight_analyst may only read

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Group roles (NOLOGIN); give people and services logins that are members:
    CREATE ROLE sink LOGIN PASSWORD '...' IN ROLE fleetsight_writer;
    CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE fleetsight_analyst;
Roles belong to the whole cluster, so they are created only if missing and
never dropped here.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = (
    "camera_minute_counts", "line_minute_crossings", "zone_minute_stats", "camera_minute_health",
    "camera_status", "alerts", "late_events",
)


def upgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fleetsight_writer') THEN
            CREATE ROLE fleetsight_writer NOLOGIN;
          END IF;
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fleetsight_analyst') THEN
            CREATE ROLE fleetsight_analyst NOLOGIN;
          END IF;
        END $$
        """
    )
    op.execute("GRANT USAGE ON SCHEMA public TO fleetsight_writer, fleetsight_analyst")
    # The sink only ever inserts and updates rows: no deletes, no DDL.
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {', '.join(TABLES)} TO fleetsight_writer")
    op.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO fleetsight_analyst")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON {', '.join(TABLES)} FROM fleetsight_writer")
    op.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM fleetsight_analyst")
    op.execute("REVOKE USAGE ON SCHEMA public FROM fleetsight_writer, fleetsight_analyst")
