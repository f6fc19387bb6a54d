"""all public tables: crossings, zones, health, status, alerts, late events, rollup views

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPDATED = dict(nullable=False, server_default=sa.func.now(), comment="when the sink last changed the row")


def _updated() -> sa.Column:
    return sa.Column("updated_at", sa.DateTime(timezone=True), **UPDATED)


def _minute() -> sa.Column:
    return sa.Column("minute", sa.DateTime(timezone=True), primary_key=True)


VIEWS = {
    # Rollups in UTC. Means are weighted by what they are means of.
    "camera_hour_counts": """
        SELECT camera_id, site, object_class, date_trunc('hour', minute, 'UTC') AS hour,
               sum(objects) AS objects, sum(tracks_ended) AS tracks_ended,
               sum(dwell_mean_s * tracks_ended) / nullif(sum(tracks_ended), 0) AS dwell_mean_s,
               max(dwell_max_s) AS dwell_max_s
        FROM camera_minute_counts GROUP BY 1, 2, 3, 4""",
    "camera_day_counts": """
        SELECT camera_id, site, object_class, date_trunc('day', minute, 'UTC') AS day,
               sum(objects) AS objects, sum(tracks_ended) AS tracks_ended,
               sum(dwell_mean_s * tracks_ended) / nullif(sum(tracks_ended), 0) AS dwell_mean_s,
               max(dwell_max_s) AS dwell_max_s
        FROM camera_minute_counts GROUP BY 1, 2, 3, 4""",
    "line_hour_crossings": """
        SELECT camera_id, site, line, object_class, date_trunc('hour', minute, 'UTC') AS hour,
               sum(crossings_in) AS crossings_in, sum(crossings_out) AS crossings_out
        FROM line_minute_crossings GROUP BY 1, 2, 3, 4, 5""",
    "line_day_crossings": """
        SELECT camera_id, site, line, object_class, date_trunc('day', minute, 'UTC') AS day,
               sum(crossings_in) AS crossings_in, sum(crossings_out) AS crossings_out
        FROM line_minute_crossings GROUP BY 1, 2, 3, 4, 5""",
    "zone_hour_stats": """
        SELECT camera_id, site, zone, object_class, date_trunc('hour', minute, 'UTC') AS hour,
               sum(entries) AS entries, sum(exits) AS exits,
               sum(dwell_mean_s * exits) / nullif(sum(exits), 0) AS dwell_mean_s, max(dwell_max_s) AS dwell_max_s,
               sum(occupancy_mean * occupancy_samples) / nullif(sum(occupancy_samples), 0) AS occupancy_mean,
               max(occupancy_max) AS occupancy_max
        FROM zone_minute_stats GROUP BY 1, 2, 3, 4, 5""",
    "zone_day_stats": """
        SELECT camera_id, site, zone, object_class, date_trunc('day', minute, 'UTC') AS day,
               sum(entries) AS entries, sum(exits) AS exits,
               sum(dwell_mean_s * exits) / nullif(sum(exits), 0) AS dwell_mean_s, max(dwell_max_s) AS dwell_max_s,
               sum(occupancy_mean * occupancy_samples) / nullif(sum(occupancy_samples), 0) AS occupancy_mean,
               max(occupancy_max) AS occupancy_max
        FROM zone_minute_stats GROUP BY 1, 2, 3, 4, 5""",
    "fleet_overview": """
        SELECT s.site,
               count(*) AS cameras,
               count(*) FILTER (WHERE s.online) AS online,
               count(*) FILTER (WHERE NOT s.online) AS offline,
               max(s.last_heard_at) AS last_heard_at,
               coalesce(sum(s.outbox_backlog), 0) AS outbox_backlog,
               coalesce(sum(s.seq_gaps), 0) AS seq_gaps,
               (SELECT coalesce(sum(c.objects), 0) FROM camera_minute_counts c
                 WHERE c.site = s.site AND c.minute >= date_trunc('day', now(), 'UTC')) AS objects_today,
               (SELECT count(*) FROM alerts a WHERE a.site = s.site AND a.state = 'open') AS open_alerts
        FROM camera_status s GROUP BY s.site""",
}


def upgrade() -> None:
    op.alter_column("camera_minute_counts", "count", new_column_name="objects", comment="tracks started", server_default="0")
    op.add_column("camera_minute_counts", sa.Column("tracks_ended", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("camera_minute_counts", sa.Column("dwell_mean_s", sa.Float, comment="mean time in view of the tracks that ended, seconds"))
    op.add_column("camera_minute_counts", sa.Column("dwell_max_s", sa.Float))
    op.add_column("camera_minute_counts", sa.Column("events", sa.BigInteger, comment="distinct events folded in (version)"))
    op.execute("UPDATE camera_minute_counts SET events = objects")
    op.alter_column("camera_minute_counts", "events", nullable=False)
    op.alter_column("camera_minute_counts", "minute", comment="start of the minute, event time, UTC", existing_type=sa.DateTime(timezone=True))
    op.create_table_comment(
        "camera_minute_counts",
        "Objects seen (tracks started) and dwell of tracks ended, per camera, object class and event-time minute.",
    )

    op.create_table(
        "line_minute_crossings",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("line", sa.String(48), primary_key=True),
        sa.Column("object_class", sa.String(48), primary_key=True),
        _minute(),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("crossings_in", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("crossings_out", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("events", sa.BigInteger, nullable=False),
        _updated(),
        comment="Line crossings in and out per camera, line, object class and event-time minute.",
    )
    op.create_index("ix_line_minute_crossings_site_minute", "line_minute_crossings", ["site", "minute"])

    op.create_table(
        "zone_minute_stats",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("zone", sa.String(48), primary_key=True),
        sa.Column("object_class", sa.String(48), primary_key=True),
        _minute(),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("entries", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("exits", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("dwell_mean_s", sa.Float, comment="mean time inside of the exits in this minute, seconds"),
        sa.Column("dwell_max_s", sa.Float),
        sa.Column("occupancy_mean", sa.Float, comment="mean objects inside over the occupancy reports"),
        sa.Column("occupancy_max", sa.Integer),
        sa.Column("occupancy_samples", sa.Integer, nullable=False, server_default="0"),
        sa.Column("events", sa.BigInteger, nullable=False),
        _updated(),
        comment="Zone entries, exits, dwell and occupancy per camera, zone, object class and event-time minute.",
    )
    op.create_index("ix_zone_minute_stats_site_minute", "zone_minute_stats", ["site", "minute"])

    op.create_table(
        "camera_minute_health",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        _minute(),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("reports", sa.Integer, nullable=False),
        sa.Column("frames", sa.BigInteger, nullable=False, comment="frames read in the report intervals ending this minute"),
        sa.Column("frames_skipped", sa.BigInteger, nullable=False, comment="of those, frames the motion gate kept from the detector"),
        sa.Column("fps_mean", sa.Float),
        sa.Column("inference_ms_p50", sa.Float, comment="mean of the reported medians"),
        sa.Column("inference_ms_p95", sa.Float, comment="largest reported 95th percentile"),
        sa.Column("outbox_depth_max", sa.BigInteger),
        sa.Column("events", sa.BigInteger, nullable=False),
        _updated(),
        comment="Detector health per camera and event-time minute.",
    )

    op.create_table(
        "camera_status",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("online", sa.Boolean, nullable=False),
        sa.Column("last_heard_at", sa.DateTime(timezone=True), nullable=False, comment="when its latest event reached Kafka"),
        sa.Column("last_event_at", sa.DateTime(timezone=True), comment="latest event time it reported"),
        sa.Column("outbox_backlog", sa.BigInteger, comment="events waiting in its outbox, from its last health report"),
        sa.Column("outbox_age_s", sa.Float),
        sa.Column("dropped_events", sa.BigInteger, comment="events its full outbox dropped, ever"),
        sa.Column("seq_first", sa.BigInteger),
        sa.Column("seq_last", sa.BigInteger),
        sa.Column("seq_received", sa.BigInteger, nullable=False),
        sa.Column("seq_gaps", sa.BigInteger, nullable=False, comment="seqs between first and last never received"),
        sa.Column("model_version", sa.String(128)),
        sa.Column("version", sa.BigInteger, nullable=False),
        _updated(),
        comment="Latest status per camera.",
    )

    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(200), primary_key=True),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False, comment="offline, backlog or occupancy"),
        sa.Column("subject", sa.String(100), nullable=False, comment="zone (and class) for occupancy, else empty"),
        sa.Column("state", sa.String(8), nullable=False, comment="open or closed"),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        _updated(),
        comment="Alerts, one row per episode.",
    )
    op.create_index("ix_alerts_state_opened", "alerts", ["state", "opened_at"])

    op.create_table(
        "late_events",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("event_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("age_s", sa.Float, nullable=False),
        comment="Events later than the retention: in the dead-letter topic, counted here, not in the aggregates.",
    )

    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for table in ("late_events", "alerts", "camera_status", "camera_minute_health", "zone_minute_stats", "line_minute_crossings"):
        op.drop_table(table)
    for column in ("events", "dwell_max_s", "dwell_mean_s", "tracks_ended"):
        op.drop_column("camera_minute_counts", column)
    op.alter_column("camera_minute_counts", "objects", new_column_name="count", comment=None, server_default=None)
