"""SQLAlchemy 2.0 models of the public SQL tables: the query contract.

All times are ``timestamptz``; per-minute tables are keyed by the start of
the minute in event time (when the camera saw it), UTC. Column names match
``schemas.aggregates``; a test checks they stay in step.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Identity, Index, Integer, LargeBinary, String, Text, Time, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class _Updated:
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), comment="when the sink last changed the row"
    )


# Per-minute tables are partitioned by day, hour rollups by month, day
# rollups by year (sinks/partitions.py makes and drops the partitions).
MINUTE_PARTITIONS = {"postgresql_partition_by": "RANGE (minute)"}


def _brin(table: str, column: str = "minute") -> Index:
    """A BRIN index on the time: a few pages a partition, and a time range without a site or camera reads
    only its stretch of the partition (the sink writes rows in time order). bench/sql_scale.py: the
    last hour of 1,000 cameras read the whole day's partition without it (430 ms)."""
    return Index(f"ix_{table}_{column}_brin", column, postgresql_using="brin")


GEOMETRY_COMMENT = "version of the camera's lines and zones (camera_geometry); '' from nodes that send none"
ROLLUP_VERSION_COMMENT = "distinct events folded in (version): the sum of its minutes' events"


# --- the columns a minute, an hour and a day row of each kind share ---------------------
# (the time column and ``events``, whose comments differ, are the concrete tables')


class _Counts(_Updated):
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    object_class: Mapped[str] = mapped_column(String(48), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    objects: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0", comment="tracks started")
    tracks_ended: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    dwell_mean_s: Mapped[float | None] = mapped_column(Float, comment="mean time in view of the tracks that ended, seconds")
    dwell_max_s: Mapped[float | None] = mapped_column(Float)


class _Lines(_Updated):
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    geometry: Mapped[str] = mapped_column(String(16), primary_key=True, server_default="", comment=GEOMETRY_COMMENT)
    line: Mapped[str] = mapped_column(String(48), primary_key=True)
    object_class: Mapped[str] = mapped_column(String(48), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    crossings_in: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    crossings_out: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


class _Zones(_Updated):
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    geometry: Mapped[str] = mapped_column(String(16), primary_key=True, server_default="", comment=GEOMETRY_COMMENT)
    zone: Mapped[str] = mapped_column(String(48), primary_key=True)
    object_class: Mapped[str] = mapped_column(String(48), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    entries: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    exits: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    dwell_mean_s: Mapped[float | None] = mapped_column(Float, comment="mean time inside of the exits, seconds")
    dwell_max_s: Mapped[float | None] = mapped_column(Float)
    occupancy_mean: Mapped[float | None] = mapped_column(Float, comment="mean objects inside over the occupancy reports")
    occupancy_max: Mapped[int | None] = mapped_column(Integer)
    occupancy_samples: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")


# The crowding signal (edge/crowding.py); the migration that added it uses the same words.
PEOPLE_SEEN = "person detections sure enough to start a track, over the detector runs reported"
PEOPLE_OVERLAPPING = "of those, overlapping another person by a fifth of their area or more"
CROWDING = "people_overlapping / people_seen: above 0.2 people hide each other and counts run low (README)"
STATUS_CROWDING = "share of people seen overlapping another in its last health report; over the alert limit: crowded"


class _Health(_Updated):
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    reports: Mapped[int] = mapped_column(Integer, nullable=False)
    frames: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="frames read in the report intervals ending this minute")
    frames_skipped: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="of those, frames the motion gate kept from the detector")
    fps_mean: Mapped[float | None] = mapped_column(Float)
    inference_ms_p50: Mapped[float | None] = mapped_column(Float, comment="mean of the reported medians")
    inference_ms_p95: Mapped[float | None] = mapped_column(Float, comment="largest reported 95th percentile")
    outbox_depth_max: Mapped[int | None] = mapped_column(BigInteger)
    people_seen: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0", comment=PEOPLE_SEEN)
    people_overlapping: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0", comment=PEOPLE_OVERLAPPING)
    crowding: Mapped[float | None] = mapped_column(Float, comment=CROWDING)


def _time(comment: str | None = None) -> Mapped[datetime]:
    """The time column, last of the key (``sort_order``: a mixin's columns come after the class's own)."""
    return mapped_column(DateTime(timezone=True), primary_key=True, comment=comment, sort_order=1)


def _events(comment: str | None = None) -> Mapped[int]:
    return mapped_column(BigInteger, nullable=False, comment=comment)


def _minute_args(table: str, comment: str, site_index: bool = True) -> tuple[Any, ...]:
    return (
        *([Index(f"ix_{table}_site_minute", "site", "minute")] if site_index else []),
        _brin(table),
        {"comment": comment, **MINUTE_PARTITIONS},
    )


class CameraMinuteCount(_Counts, Base):
    """Objects seen (tracks started) and tracks ended per camera, class and minute."""

    __tablename__ = "camera_minute_counts"
    minute: Mapped[datetime] = _time("start of the minute, event time, UTC")
    events: Mapped[int] = _events("distinct events folded in (version)")
    __table_args__ = _minute_args(
        __tablename__, "Objects seen (tracks started) and dwell of tracks ended, per camera, object class and event-time minute."
    )


class LineMinuteCrossing(_Lines, Base):
    """Line crossings per camera, line, class and minute."""

    __tablename__ = "line_minute_crossings"
    minute: Mapped[datetime] = _time()
    events: Mapped[int] = _events()
    __table_args__ = _minute_args(__tablename__, "Line crossings in and out per camera, line, object class and event-time minute.")


class ZoneMinuteStat(_Zones, Base):
    """Zone entries, exits, dwell and occupancy per camera, zone, class and minute."""

    __tablename__ = "zone_minute_stats"
    minute: Mapped[datetime] = _time()
    dwell_mean_s: Mapped[float | None] = mapped_column(Float, comment="mean time inside of the exits in this minute, seconds")
    events: Mapped[int] = _events()
    __table_args__ = _minute_args(
        __tablename__, "Zone entries, exits, dwell and occupancy per camera, zone, object class and event-time minute."
    )


class CameraMinuteHealth(_Health, Base):
    """Detector health per camera and minute, from the node's health reports."""

    __tablename__ = "camera_minute_health"
    minute: Mapped[datetime] = _time()
    events: Mapped[int] = _events()
    __table_args__ = _minute_args(__tablename__, "Detector health per camera and event-time minute.", site_index=False)


# --- hour and day rollups: real tables the stream worker keeps exact (schemas.aggregates.ROLLUPS) ---


class _RolledUp:
    events: Mapped[int] = _events(ROLLUP_VERSION_COMMENT)


def _rollup_args(table: str, period: str, what: str) -> tuple[Any, ...]:
    return (
        Index(f"ix_{table}_site_{period}", "site", period),
        # An hour table: a BRIN on the hour (rows come in time order). A day table is
        # small, but a question about one day of all cameras (today's top 20) read the
        # whole year's partition without an index that leads with the day (issue 38).
        _brin(table, period) if period == "hour" else Index(f"ix_{table}_{period}", period),
        {"comment": f"{what} per UTC {period}: the sums of its minutes, kept by the stream worker.",
         "postgresql_partition_by": f"RANGE ({period})"},
    )


HOUR, DAY = "start of the hour, event time, UTC", "start of the day, event time, UTC"


class CameraHourCount(_RolledUp, _Counts, Base):
    __tablename__ = "camera_hour_counts"
    hour: Mapped[datetime] = _time(HOUR)
    __table_args__ = _rollup_args(__tablename__, "hour", "Objects seen and dwell per camera and object class")


class CameraDayCount(_RolledUp, _Counts, Base):
    __tablename__ = "camera_day_counts"
    day: Mapped[datetime] = _time(DAY)
    __table_args__ = _rollup_args(__tablename__, "day", "Objects seen and dwell per camera and object class")


class LineHourCrossing(_RolledUp, _Lines, Base):
    __tablename__ = "line_hour_crossings"
    hour: Mapped[datetime] = _time(HOUR)
    __table_args__ = _rollup_args(__tablename__, "hour", "Line crossings per camera, line and object class")


class LineDayCrossing(_RolledUp, _Lines, Base):
    __tablename__ = "line_day_crossings"
    day: Mapped[datetime] = _time(DAY)
    __table_args__ = _rollup_args(__tablename__, "day", "Line crossings per camera, line and object class")


class ZoneHourStat(_RolledUp, _Zones, Base):
    __tablename__ = "zone_hour_stats"
    hour: Mapped[datetime] = _time(HOUR)
    __table_args__ = _rollup_args(__tablename__, "hour", "Zone entries, exits, dwell and occupancy per camera, zone and object class")


class ZoneDayStat(_RolledUp, _Zones, Base):
    __tablename__ = "zone_day_stats"
    day: Mapped[datetime] = _time(DAY)
    __table_args__ = _rollup_args(__tablename__, "day", "Zone entries, exits, dwell and occupancy per camera, zone and object class")


class CameraHourHealth(_RolledUp, _Health, Base):
    __tablename__ = "camera_hour_health"
    hour: Mapped[datetime] = _time(HOUR)
    __table_args__ = _rollup_args(__tablename__, "hour", "Detector health per camera")


class CameraDayHealth(_RolledUp, _Health, Base):
    __tablename__ = "camera_day_health"
    day: Mapped[datetime] = _time(DAY)
    __table_args__ = _rollup_args(__tablename__, "day", "Detector health per camera")


class CameraStatus(_Updated, Base):
    """One row per camera: the latest of what the cloud knows about it."""

    __tablename__ = "camera_status"
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    online: Mapped[bool] = mapped_column(Boolean, nullable=False)
    last_heard_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, comment="when its latest event reached Kafka")
    last_event_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), comment="latest event time it reported")
    outbox_backlog: Mapped[int | None] = mapped_column(BigInteger, comment="events waiting in its outbox, from its last health report")
    outbox_age_s: Mapped[float | None] = mapped_column(Float)
    dropped_events: Mapped[int | None] = mapped_column(BigInteger, comment="events its full outbox dropped, ever")
    seq_first: Mapped[int | None] = mapped_column(BigInteger)
    seq_last: Mapped[int | None] = mapped_column(BigInteger)
    seq_received: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seq_gaps: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="seqs between first and last never received")
    model_version: Mapped[str | None] = mapped_column(String(128))
    clock_offset_s: Mapped[float | None] = mapped_column(Float, comment="camera clock minus the cloud's, seconds (positive: ahead)")
    video_state: Mapped[str | None] = mapped_column(
        String(16), comment="ok, stalled (open, no frames) or down (cannot open, broke), from its last health report"
    )
    video_reconnects: Mapped[int | None] = mapped_column(BigInteger, comment="new connections to its video stream since the node started")
    video_lost_s: Mapped[float | None] = mapped_column(Float, comment="seconds of video missed since the node started")
    tamper: Mapped[str | None] = mapped_column(
        String(64), comment="blocked, moved, defocused (comma-separated) against the view it learnt at start; null: none"
    )
    frames_missed: Mapped[int | None] = mapped_column(
        BigInteger, comment="live frames it missed (busy) between its last two health reports"
    )
    frames_missed_share: Mapped[float | None] = mapped_column(
        Float, comment="frames_missed over the frames that arrived in that time (0-1); over the alert limit: overloaded"
    )
    crowding: Mapped[float | None] = mapped_column(Float, comment=STATUS_CROWDING)
    last_matched_minute: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="newest minute whose SQL figures match the camera's ledger (set by the reconciler)"
    )
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    __table_args__ = ({"comment": "Latest status per camera."},)


class Alert(_Updated, Base):
    """Alerts as they open and close."""

    __tablename__ = "alerts"
    alert_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(64), nullable=False)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(
        String(32), nullable=False,
        comment="offline, backlog, occupancy, clock_skew, reconcile, video_down, tamper, overloaded, crowded or capacity (a site's: camera_id empty)",
    )
    subject: Mapped[str] = mapped_column(String(100), nullable=False, comment="zone (and class) for occupancy, else empty")
    state: Mapped[str] = mapped_column(String(8), nullable=False, comment="open or closed")
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __table_args__ = (
        Index("ix_alerts_state_opened", "state", "opened_at"),
        # The notifier's sweep (sinks/notifier.py) reads the rows changed lately.
        Index("ix_alerts_updated_at", "updated_at"),
        {"comment": "Alerts, one row per episode."},
    )


class LateEvent(Base):
    """Events that arrived later than the retention and were not aggregated."""

    __tablename__ = "late_events"
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    event_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    arrived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    age_s: Mapped[float] = mapped_column(Float, nullable=False)
    __table_args__ = ({"comment": "Events later than the retention: in the dead-letter topic, counted here, not in the aggregates."},)


class CameraMinuteEvents(_Updated, Base):
    """What the cloud applied per camera and minute: the cloud's side of the reconciliation."""

    __tablename__ = "camera_minute_events"
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    seq_first: Mapped[int | None] = mapped_column(BigInteger)
    seq_last: Mapped[int | None] = mapped_column(BigInteger)
    seq_digest: Mapped[str] = mapped_column(String(16), nullable=False, comment="XOR of a hash per seq (schemas/ledger.py)")
    events: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="distinct events of the minute applied (reconcile events not counted)")
    __table_args__ = ({"comment": "Events the cloud applied per camera and event-time minute (count, seq range, digest).", **MINUTE_PARTITIONS},)


class CameraMinuteLedger(_Updated, Base):
    """What a camera says it recorded per minute: its latest reconcile report."""

    __tablename__ = "camera_minute_ledger"
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    events: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="events recorded in the minute")
    seq_first: Mapped[int | None] = mapped_column(BigInteger)
    seq_last: Mapped[int | None] = mapped_column(BigInteger)
    seq_digest: Mapped[str] = mapped_column(String(16), nullable=False)
    totals: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, comment="count per SQL cell, keys as in schemas/ledger.py")
    dropped: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="of the events, dropped by a full outbox")
    dropped_digest: Mapped[str] = mapped_column(String(16), nullable=False)
    dropped_totals: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, comment="camera time of the report")
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="seq of the reconcile event")
    __table_args__ = ({"comment": "Each camera's own record of each closed minute (reconcile events).", **MINUTE_PARTITIONS},)


class CameraGeometry(_Updated, Base):
    """A version of a camera's lines and zones."""

    __tablename__ = "camera_geometry"
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    geometry: Mapped[str] = mapped_column(String(16), primary_key=True, comment="content hash of the lines and zones")
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    definition: Mapped[dict[str, Any] | None] = mapped_column(JSONB, comment="the lines and zones; null until the node's geometry event arrives")
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, comment="earliest event time with this version")
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, comment="latest event time with this version")
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    __table_args__ = ({"comment": "Versions of each camera's counting lines and zones (camera_geometry_current: the latest)."},)


MODELS: dict[str, type[Base]] = {
    m.__tablename__: m
    for m in (
        CameraMinuteCount, LineMinuteCrossing, ZoneMinuteStat, CameraMinuteHealth, CameraStatus, Alert, LateEvent,
        CameraMinuteEvents, CameraMinuteLedger, CameraGeometry,
        CameraHourCount, CameraDayCount, LineHourCrossing, LineDayCrossing, ZoneHourStat, ZoneDayStat, CameraHourHealth, CameraDayHealth,
    )
}
# Columns not written from the row topic: the reconciler keeps them.
RECONCILER_COLUMNS: dict[str, frozenset[str]] = {"camera_status": frozenset({"last_matched_minute"})}


class CameraMinuteReconciliation(Base):
    """Per camera and minute: does SQL hold what the camera recorded?"""

    __tablename__ = "camera_minute_reconciliation"
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(
        String(16), nullable=False,
        comment="match, pending (no ledger yet, or rows on their way), mismatch, edge_dropped (short by exactly what a full outbox dropped)",
    )
    differences: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, comment='what differs: {"name": {"edge": n, "cloud": m}}')
    edge_events: Mapped[int | None] = mapped_column(BigInteger, comment="events the camera recorded (null: no ledger)")
    cloud_events: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="events the cloud applied")
    dropped: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    clock_suspect: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false", comment="a clock_skew alert of the camera covered this minute")
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, comment="when this verdict was reached")
    __table_args__ = (
        Index("ix_camera_minute_reconciliation_state", "state", "minute"),
        _brin("camera_minute_reconciliation"),
        {"comment": "Reconciliation of each camera-minute: the camera's ledger against SQL (sinks/reconcile.py).", **MINUTE_PARTITIONS},
    )


class ModelVersion(Base):
    """A model file in the registry (``fleetsight model publish``)."""

    __tablename__ = "model_versions"
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, comment="architecture, as the edge knows it")
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    input_shape: Mapped[str] = mapped_column(String(64), nullable=False, comment="e.g. 1x3x416x416")
    classes: Mapped[int] = mapped_column(Integer, nullable=False, comment="number of classes the model outputs")
    notes: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    content: Mapped[bytes] = mapped_column(LargeBinary, nullable=False, comment="the ONNX file", deferred=True)
    __table_args__ = ({"comment": "Models that can be rolled out to edges."},)


class ModelRollout(Base):
    """One ``fleetsight model rollout``: a version, and when it was issued."""

    __tablename__ = "model_rollouts"
    rollout_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), ForeignKey("model_versions.version"), nullable=False)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    __table_args__ = ({"comment": "Rollout instructions (fleetsight model rollout); the latest one addressed to a camera or its site wins."},)


class ModelRolloutTarget(Base):
    """A site or camera a rollout addressed."""

    __tablename__ = "model_rollout_targets"
    rollout_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("model_rollouts.rollout_id"), primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(8), primary_key=True, comment="site or camera")
    target: Mapped[str] = mapped_column(String(64), primary_key=True, comment="the site or camera id")
    __table_args__ = ({"comment": "The sites and cameras a rollout addressed."},)


class AlertDelivery(Base):
    """One alert's opening or closing, to one webhook (sinks/notifier.py): what was sent and how it went."""

    __tablename__ = "alert_deliveries"
    delivery_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True, comment="order of queueing: each webhook gets its deliveries in this order")
    webhook: Mapped[str] = mapped_column(String(64), nullable=False, comment="the webhook's name in the notifier's settings")
    alert_id: Mapped[str] = mapped_column(String(200), nullable=False)
    state: Mapped[str] = mapped_column(String(8), nullable=False, comment="open or closed: which change of the alert this tells")
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    site: Mapped[str] = mapped_column(String(64), nullable=False)
    camera_id: Mapped[str] = mapped_column(String(64), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(64), nullable=False, comment="the Idempotency-Key header: the same on every attempt")
    body: Mapped[str] = mapped_column(Text, nullable=False, comment="the JSON body, byte for byte what every attempt posts")
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default="pending",
        comment="pending, delivered (2xx), rejected (a 4xx other than 408/429: not retried) or expired (given up)",
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text, comment="what the last failed attempt got: HTTP status or connection error")
    response_status: Mapped[int | None] = mapped_column(Integer, comment="HTTP status of the last answer")
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    __table_args__ = (
        # Alert first: the notifier's sweep looks deliveries up by alert and state, whatever the webhook.
        Index("ux_alert_deliveries_alert_state_webhook", "alert_id", "state", "webhook", unique=True),
        Index("ix_alert_deliveries_pending", "webhook", "delivery_id", postgresql_where=text("status = 'pending'")),
        {"comment": "Alert notifications: one row per alert change and webhook (sinks/notifier.py)."},
    )


class PartitionFloor(Base):
    """How far back a time-partitioned table was dropped (sinks/partitions.py)."""

    __tablename__ = "partition_floors"
    table_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    dropped_before: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, comment="the end of the newest partition dropped: nothing before it is made again",
    )
    retention_days: Mapped[int] = mapped_column(Integer, nullable=False, comment="the retention that drop was made at")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    __table_args__ = ({"comment": "How far back each time-partitioned table was dropped (sinks/partitions.py)."},)


# --- site occupancy: kept by the sink from the doors' crossings (sinks/site_occupancy.py) ---

SITE_DAY = "start of the site's day (its day_starts in its time zone, FLEETSIGHT_SITES): the count starts at 0"
INSIDE = "people inside at the end: net in since the day started, plus corrected"
CORRECTED = "exits ignored since the day started so that inside never went below 0 (a door missed their entry)"
COMPLETE = "false while a door of the site is dark (offline or sending a backlog) for this time: figures may still grow"


class _SiteOccupancy(_Updated):
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    people_in: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="people who came in through the site's entrances")
    people_out: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="people who went out through them")
    inside: Mapped[int] = mapped_column(BigInteger, nullable=False, comment=INSIDE)
    peak: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="most people inside at any minute's start or end")
    corrected: Mapped[int] = mapped_column(BigInteger, nullable=False, comment=CORRECTED)
    complete: Mapped[bool] = mapped_column(Boolean, nullable=False, comment=COMPLETE)


class SiteMinuteOccupancy(_SiteOccupancy, Base):
    """People in, out and inside per site and minute."""

    __tablename__ = "site_minute_occupancy"
    minute: Mapped[datetime] = _time("start of the minute, event time, UTC")
    day: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, comment=SITE_DAY)
    net: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="people in minus out since the day started")
    __table_args__ = (
        _brin(__tablename__),
        # The minutes a dark door left incomplete: few, and found again when it has sent them.
        Index("ix_site_minute_occupancy_incomplete", "site", "minute", postgresql_where=text("NOT complete")),
        {"comment": "People in, out and inside per site and event-time minute, from the crossings of its entrance lines.",
         **MINUTE_PARTITIONS},
    )


class SiteHourOccupancy(_SiteOccupancy, Base):
    __tablename__ = "site_hour_occupancy"
    hour: Mapped[datetime] = _time(HOUR)
    __table_args__ = (
        _brin(__tablename__, "hour"),
        {"comment": "People in, out and inside per site and UTC hour: inside at its last minute, the peak of its minutes.",
         "postgresql_partition_by": "RANGE (hour)"},
    )


class SiteDayOccupancy(_SiteOccupancy, Base):
    __tablename__ = "site_day_occupancy"
    day: Mapped[datetime] = _time(SITE_DAY)
    __table_args__ = (
        Index("ix_site_day_occupancy_day", "day"),
        {"comment": "Visits (people_in), the peak and what was left inside per site and site day (its own time zone and reset).",
         "postgresql_partition_by": "RANGE (day)"},
    )


class SiteRules(_Updated, Base):
    """A site's rules as the sink was started with them (``FLEETSIGHT_SITES``), for SQL to read."""

    __tablename__ = "site_rules"
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    time_zone: Mapped[str] = mapped_column(String(64), nullable=False, comment="IANA zone: the site's day follows its clock")
    day_starts: Mapped[time] = mapped_column(Time, nullable=False, comment="local time the count starts again at zero")
    capacity: Mapped[int | None] = mapped_column(Integer, comment="people the site may hold (null: no limit)")
    capacity_for_s: Mapped[float] = mapped_column(Float, nullable=False, comment="over the capacity this long opens an alert")
    __table_args__ = ({"comment": "Each site's rules as the sink was started with them (FLEETSIGHT_SITES); a site not here: UTC midnight, no capacity."},)
