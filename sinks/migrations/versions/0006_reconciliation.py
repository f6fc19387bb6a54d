"""reconciliation, versioned geometry, camera clocks

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

- ``camera_minute_events`` (what the cloud applied per camera-minute),
  ``camera_minute_ledger`` (what the camera says it recorded) and
  ``camera_minute_reconciliation`` (the verdict, kept by the reconciler);
- ``camera_geometry`` and the ``geometry`` key column of the line and zone
  tables (rows from before get '', the version of a node that sends none),
  with the view ``camera_geometry_current``; the line and zone rollup views
  keep versions apart too (a ``geometry`` column);
- ``camera_status.clock_offset_s`` and ``last_matched_minute``.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

GEOMETRY_COMMENT = "version of the camera's lines and zones (camera_geometry); '' from nodes that send none"
KEYED = {"line_minute_crossings": "line", "zone_minute_stats": "zone"}
NEW_TABLES = ("camera_minute_events", "camera_minute_ledger", "camera_geometry", "camera_minute_reconciliation")
CURRENT_VIEW = """
    CREATE VIEW camera_geometry_current AS
    SELECT DISTINCT ON (camera_id) camera_id, geometry, definition, first_seen, last_seen
    FROM camera_geometry
    ORDER BY camera_id, last_seen DESC, first_seen DESC
"""


def _rollups(geometry: bool) -> dict[str, str]:
    """The line and zone rollups of 0002, with or without the geometry version."""
    g, n = ("geometry, ", 6) if geometry else ("", 5)
    keys = ", ".join(str(i) for i in range(1, n + 1))
    zone_values = """sum(entries) AS entries, sum(exits) AS exits,
               sum(dwell_mean_s * exits) / nullif(sum(exits), 0) AS dwell_mean_s, max(dwell_max_s) AS dwell_max_s,
               sum(occupancy_mean * occupancy_samples) / nullif(sum(occupancy_samples), 0) AS occupancy_mean,
               max(occupancy_max) AS occupancy_max"""
    out = {}
    for unit in ("hour", "day"):
        out[f"line_{unit}_crossings"] = f"""
        SELECT camera_id, site, {g}line, object_class, date_trunc('{unit}', minute, 'UTC') AS {unit},
               sum(crossings_in) AS crossings_in, sum(crossings_out) AS crossings_out
        FROM line_minute_crossings GROUP BY {keys}"""
        out[f"zone_{unit}_stats"] = f"""
        SELECT camera_id, site, {g}zone, object_class, date_trunc('{unit}', minute, 'UTC') AS {unit},
               {zone_values}
        FROM zone_minute_stats GROUP BY {keys}"""
    return out


def _replace_rollups(geometry: bool) -> None:
    for name, body in _rollups(geometry).items():
        op.execute(f"DROP VIEW IF EXISTS {name}")
        op.execute(f"CREATE VIEW {name} AS {body}")
        op.execute(f"GRANT SELECT ON {name} TO fleetsight_analyst")


def _updated() -> sa.Column:
    return sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(), comment="when the sink last changed the row"
    )


def upgrade() -> None:
    for table, name in KEYED.items():
        op.add_column(table, sa.Column("geometry", sa.String(16), nullable=False, server_default="", comment=GEOMETRY_COMMENT))
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.create_primary_key(f"{table}_pkey", table, ["camera_id", "geometry", name, "object_class", "minute"])
    _replace_rollups(geometry=True)
    op.add_column("camera_status", sa.Column("clock_offset_s", sa.Float, comment="camera clock minus the cloud's, seconds (positive: ahead)"))
    op.add_column("camera_status", sa.Column(
        "last_matched_minute", sa.DateTime(timezone=True),
        comment="newest minute whose SQL figures match the camera's ledger (set by the reconciler)",
    ))
    op.create_table(
        "camera_minute_events",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("seq_first", sa.BigInteger),
        sa.Column("seq_last", sa.BigInteger),
        sa.Column("seq_digest", sa.String(16), nullable=False, comment="XOR of a hash per seq (schemas/ledger.py)"),
        sa.Column("events", sa.BigInteger, nullable=False, comment="distinct events of the minute applied (reconcile events not counted)"),
        _updated(),
        comment="Events the cloud applied per camera and event-time minute (count, seq range, digest).",
    )
    op.create_table(
        "camera_minute_ledger",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False, comment="events recorded in the minute"),
        sa.Column("seq_first", sa.BigInteger),
        sa.Column("seq_last", sa.BigInteger),
        sa.Column("seq_digest", sa.String(16), nullable=False),
        sa.Column("totals", JSONB, nullable=False, comment="count per SQL cell, keys as in schemas/ledger.py"),
        sa.Column("dropped", sa.BigInteger, nullable=False, comment="of the events, dropped by a full outbox"),
        sa.Column("dropped_digest", sa.String(16), nullable=False),
        sa.Column("dropped_totals", JSONB, nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False, comment="camera time of the report"),
        sa.Column("version", sa.BigInteger, nullable=False, comment="seq of the reconcile event"),
        _updated(),
        comment="Each camera's own record of each closed minute (reconcile events).",
    )
    op.create_table(
        "camera_geometry",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("geometry", sa.String(16), primary_key=True, comment="content hash of the lines and zones"),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("definition", JSONB, comment="the lines and zones; null until the node's geometry event arrives"),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False, comment="earliest event time with this version"),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False, comment="latest event time with this version"),
        sa.Column("version", sa.BigInteger, nullable=False),
        _updated(),
        comment="Versions of each camera's counting lines and zones (camera_geometry_current: the latest).",
    )
    op.create_table(
        "camera_minute_reconciliation",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column(
            "state", sa.String(16), nullable=False,
            comment="match, pending (no ledger yet, or rows on their way), mismatch, edge_dropped (short by exactly what a full outbox dropped)",
        ),
        sa.Column("differences", JSONB, nullable=False, comment='what differs: {"name": {"edge": n, "cloud": m}}'),
        sa.Column("edge_events", sa.BigInteger, comment="events the camera recorded (null: no ledger)"),
        sa.Column("cloud_events", sa.BigInteger, nullable=False, comment="events the cloud applied"),
        sa.Column("dropped", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("clock_suspect", sa.Boolean, nullable=False, server_default="false", comment="a clock_skew alert of the camera covered this minute"),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False, comment="when this verdict was reached"),
        comment="Reconciliation of each camera-minute: the camera's ledger against SQL (sinks/reconcile.py).",
    )
    op.create_index("ix_camera_minute_reconciliation_state", "camera_minute_reconciliation", ["state", "minute"])
    op.execute(CURRENT_VIEW)
    # The reconciler (the sink's login) reads everything and writes its verdicts; analysts read.
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {', '.join(NEW_TABLES)} TO fleetsight_writer")
    op.execute(f"GRANT SELECT ON {', '.join(NEW_TABLES)}, camera_geometry_current TO fleetsight_analyst")


def downgrade() -> None:
    op.execute("DROP VIEW camera_geometry_current")
    _replace_rollups(geometry=False)
    for table in reversed(NEW_TABLES):
        op.drop_table(table)
    op.drop_column("camera_status", "last_matched_minute")
    op.drop_column("camera_status", "clock_offset_s")
    for table, name in KEYED.items():
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.execute(f"DELETE FROM {table} WHERE geometry <> ''")  # the old key cannot hold several versions
        op.create_primary_key(f"{table}_pkey", table, ["camera_id", name, "object_class", "minute"])
        op.drop_column(table, "geometry")
