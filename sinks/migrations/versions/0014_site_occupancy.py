"""site occupancy: people in, out and inside per site, from its entrance lines

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

A line of a camera can be a site entrance (``edge/config.py``); its
geometry event says so, and ``site_entrances`` lists those lines from
``camera_geometry``. The sink keeps ``site_minute_occupancy`` and its hour
and day tables from the doors' person crossings (sinks/site_occupancy.py),
partitioned like the line tables: their partitions are made here for the
same periods the line tables have, so a door whose crossings are already
in SQL can be counted back as far as they go. ``alerts.kind`` lists
``capacity``: a site over the people it may hold (``camera_id`` empty).
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

OLD_KINDS = "offline, backlog, occupancy, clock_skew, reconcile, video_down, tamper, overloaded or crowded"
KINDS = "offline, backlog, occupancy, clock_skew, reconcile, video_down, tamper, overloaded, crowded or capacity (a site's: camera_id empty)"
# As in sinks/models.py (a migration stays as it was written; these words are its own).
SITE_DAY = "start of the site's day (its day_starts in its time zone, FLEETSIGHT_SITES): the count starts at 0"
INSIDE = "people inside at the end: net in since the day started, plus corrected"
CORRECTED = "exits ignored since the day started so that inside never went below 0 (a door missed their entry)"
COMPLETE = "false while a door of the site is dark (offline or sending a backlog) for this time: figures may still grow"
HOUR = "start of the hour, event time, UTC"
TABLES = {  # table: (time column, its comment, the line table whose partitions it mirrors, the table's comment)
    "site_minute_occupancy": ("minute", "start of the minute, event time, UTC", "line_minute_crossings",
                              "People in, out and inside per site and event-time minute, from the crossings of its entrance lines."),
    "site_hour_occupancy": ("hour", HOUR, "line_hour_crossings",
                            "People in, out and inside per site and UTC hour: inside at its last minute, the peak of its minutes."),
    "site_day_occupancy": ("day", SITE_DAY, "line_day_crossings",
                           "Visits (people_in), the peak and what was left inside per site and site day (its own time zone and reset)."),
}


def _columns(table: str, time: str, time_comment: str) -> list[sa.Column]:  # type: ignore[type-arg]
    extra = []
    if table == "site_minute_occupancy":
        extra = [
            sa.Column("day", sa.DateTime(timezone=True), nullable=False, comment=SITE_DAY),
            sa.Column("net", sa.BigInteger, nullable=False, comment="people in minus out since the day started"),
        ]
    return [
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column(time, sa.DateTime(timezone=True), primary_key=True, comment=time_comment),
        sa.Column("people_in", sa.BigInteger, nullable=False, comment="people who came in through the site's entrances"),
        sa.Column("people_out", sa.BigInteger, nullable=False, comment="people who went out through them"),
        sa.Column("inside", sa.BigInteger, nullable=False, comment=INSIDE),
        sa.Column("peak", sa.BigInteger, nullable=False, comment="most people inside at any minute's start or end"),
        sa.Column("corrected", sa.BigInteger, nullable=False, comment=CORRECTED),
        sa.Column("complete", sa.Boolean, nullable=False, comment=COMPLETE),
        *extra,
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(), comment="when the sink last changed the row"),
    ]


def upgrade() -> None:
    for table, (time, time_comment, mirror, comment) in TABLES.items():
        op.create_table(table, *_columns(table, time, time_comment), comment=comment, postgresql_partition_by=f"RANGE ({time})")
        if time == "day":
            op.create_index(f"ix_{table}_day", table, ["day"])
        else:
            op.execute(f'CREATE INDEX "ix_{table}_{time}_brin" ON "{table}" USING brin ({time})')
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO fleetsight_writer")
        op.execute(f"GRANT SELECT ON {table} TO fleetsight_analyst")
        # The line table's partitions, period for period (named as sinks/partitions.py names them).
        op.execute(f"""
            DO $$ DECLARE p record; BEGIN
                FOR p IN SELECT child.relname AS name, pg_get_expr(child.relpartbound, child.oid) AS bound
                         FROM pg_inherits i JOIN pg_class parent ON parent.oid = i.inhparent JOIN pg_class child ON child.oid = i.inhrelid
                         WHERE parent.relname = '{mirror}' AND NOT i.inhdetachpending LOOP
                    EXECUTE format('CREATE TABLE %I PARTITION OF {table} %s', replace(p.name, '{mirror}', '{table}'), p.bound);
                END LOOP;
            END $$
        """)
    op.create_index("ix_site_minute_occupancy_incomplete", "site_minute_occupancy", ["site", "minute"], postgresql_where=sa.text("NOT complete"))
    op.execute("""
        CREATE VIEW site_entrances AS
        SELECT g.site, g.camera_id, g.geometry, l->>'name' AS line, l->>'entrance' AS direction, g.first_seen, g.last_seen
        FROM camera_geometry g CROSS JOIN LATERAL jsonb_array_elements(g.definition->'lines') AS l
        WHERE l ? 'entrance'
    """)
    op.execute("COMMENT ON VIEW site_entrances IS 'Lines that are site entrances, per camera geometry version; direction: the one that enters the site.'")
    op.execute("GRANT SELECT ON site_entrances TO fleetsight_writer, fleetsight_analyst")
    op.alter_column("alerts", "kind", existing_type=sa.String(32), existing_nullable=False, comment=KINDS, existing_comment=OLD_KINDS)


def downgrade() -> None:
    op.alter_column("alerts", "kind", existing_type=sa.String(32), existing_nullable=False, comment=OLD_KINDS, existing_comment=KINDS)
    op.execute("DROP VIEW site_entrances")
    for table in TABLES:
        op.drop_table(table)
