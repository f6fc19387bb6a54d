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
    op.create_table(
        "site_rules",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("time_zone", sa.String(64), nullable=False, comment="IANA zone: the site's day follows its clock"),
        sa.Column("day_starts", sa.Time, nullable=False, comment="local time the count starts again at zero"),
        sa.Column("capacity", sa.Integer, comment="people the site may hold (null: no limit)"),
        sa.Column("capacity_for_s", sa.Float, nullable=False, comment="over the capacity this long opens an alert"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(), comment="when the sink last changed the row"),
        comment="Each site's rules as the sink was started with them (FLEETSIGHT_SITES); a site not here: UTC midnight, no capacity.",
    )
    op.execute("GRANT SELECT, INSERT, UPDATE ON site_rules TO fleetsight_writer")
    op.execute("GRANT SELECT ON site_rules TO fleetsight_analyst")
    op.execute(SITE_OCCUPANCY_NOW)
    op.execute("COMMENT ON VIEW site_occupancy_now IS 'People inside each site now (0 once its day started again), "
               "whether a door is dark, and its capacity.'")
    op.execute("GRANT SELECT ON site_occupancy_now TO fleetsight_writer, fleetsight_analyst")
    op.alter_column("alerts", "kind", existing_type=sa.String(32), existing_nullable=False, comment=KINDS, existing_comment=OLD_KINDS)


# The latest day row of each site holds the inside at its last minute; a day
# that is not the site's current one means the count has started again (0).
# A door is dark as sinks/site_occupancy.py says (offline, a backlog, or
# catching up: its newest event well before its arrival).
SITE_OCCUPANCY_NOW = """
    CREATE VIEW site_occupancy_now AS
    SELECT l.site,
           CASE WHEN l.day < d.today THEN 0 ELSE l.inside END AS inside,
           CASE WHEN l.day < d.today THEN 0 ELSE l.people_in END AS visits_today,
           CASE WHEN l.day < d.today THEN 0 ELSE l.peak END AS peak_today,
           d.today AS day_started,
           r.capacity,
           dark.doors IS NULL AS complete,
           dark.doors AS dark_doors
    FROM (SELECT DISTINCT ON (site) site, day, inside, people_in, peak FROM site_day_occupancy ORDER BY site, day DESC) l
    LEFT JOIN site_rules r ON r.site = l.site
    CROSS JOIN LATERAL (
        SELECT (date_trunc('day', (now() AT TIME ZONE coalesce(r.time_zone, 'UTC')) - coalesce(r.day_starts, '00:00')::interval)
                + coalesce(r.day_starts, '00:00')::interval) AT TIME ZONE coalesce(r.time_zone, 'UTC') AS today
    ) d
    LEFT JOIN LATERAL (
        SELECT string_agg(DISTINCT s.camera_id, ', ' ORDER BY s.camera_id) AS doors
        FROM site_entrances e JOIN camera_status s ON s.camera_id = e.camera_id
        WHERE e.site = l.site AND (NOT s.online OR coalesce(s.outbox_backlog, 0) > 0
              OR s.last_event_at - make_interval(secs => coalesce(s.clock_offset_s, 0)) < s.last_heard_at - interval '120 seconds')
    ) dark ON true
"""


def downgrade() -> None:
    op.alter_column("alerts", "kind", existing_type=sa.String(32), existing_nullable=False, comment=OLD_KINDS, existing_comment=KINDS)
    op.execute("DROP VIEW site_occupancy_now")
    op.drop_table("site_rules")
    op.execute("DROP VIEW site_entrances")
    for table in TABLES:
        op.drop_table(table)
