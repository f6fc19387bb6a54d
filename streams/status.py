"""Per-camera status and alerts: last heard, online, backlog, seq gaps, model.

Pure logic over a mapping keyed by camera id (in the worker, the cameras a
batch touches, read from PostgreSQL by ``streams.state``).
The status is idempotent (maxima, sets, latest-by-time), so a replayed batch
changes nothing; the alert rules look only at events new to the aggregates,
in event-time order, so a resent or duplicate event cannot move them.

Alerts open and close with hysteresis, so a flapping condition does not
make a storm of them:

- ``offline``: nothing heard for ``offline_after_s``; closes once the camera
  has been heard again for ``clear_after_s``.
- ``backlog``: the outbox depth rose over the last ``backlog_reports`` health
  reports and is at least ``backlog_min``; closes below ``backlog_min``.
- ``occupancy``: a zone held more than ``max`` objects for ``for_s`` (event
  time); closes after ``for_s`` at or below it.
- ``clock_skew``: the camera's clock is more than ``clock_skew_s`` off the
  cloud's; closes below 80 % of it. The offset comes from the node's own
  ack round-trip estimate when its health reports carry one, else from
  health reports sent live (outbox nearly empty): event time minus Kafka's
  append time, the largest of the last few (the one least delayed). Events
  still count in the minute the camera says; the alert says which to distrust.
- ``video_down``: the camera's health says its video is ``stalled`` or
  ``down`` (the node reports a change at once); closes when it says ``ok``.
- ``tamper``: one per kind (``blocked``, ``moved``, ``defocused``) the
  node's view check reports; closes when the report no longer names it.
- ``overloaded``: a health report says the node missed more than
  ``missed_share`` of the camera's live frames since the one before (a
  newer frame replaced each while the node was busy: the box runs more than
  it can); closes at half of it or below.
- ``crowded``: a health report over at least ``CROWDING_MIN_PEOPLE`` people
  says more than ``crowding_share`` of them overlapped another person
  (edge/crowding.py: people hide each other, and the camera's counts run
  low); closes at 80 % of it or below.

Each camera's geometry versions (``camera_geometry``) are kept here too:
first and last seen from the events that carry a version, the lines and
zones from the node's ``geometry`` event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from schemas.aggregates import ALERTS, CAMERA_GEOMETRY, CAMERA_STATUS, LATE_EVENTS, Row
from schemas.codec import Event
from streams.aggregate import Incoming, SeqSet


@dataclass(frozen=True)
class OccupancyRule:
    zone: str
    max: int
    for_s: float = 60.0
    camera_id: str | None = None  # None: every camera with this zone
    object_class: str | None = None  # None: all classes together


@dataclass(frozen=True)
class AlertConfig:
    offline_after_s: float = 120.0
    clear_after_s: float = 60.0
    backlog_min: int = 100
    backlog_reports: int = 3
    occupancy: tuple[OccupancyRule, ...] = field(default_factory=tuple)
    clock_skew_s: float = 5.0
    missed_share: float = 0.2
    crowding_share: float = 0.2


CROWDING_MIN_PEOPLE = 50  # a report over fewer people seen says too little to open or close a crowded alert
MISSED_MIN_FRAMES = 20  # a report over fewer frames (a stream just back) does not open an overloaded alert
LIVE_AGE_S = 5.0  # a health report made with nothing older than this waiting was sent live
CLOCK_SAMPLES = 10
GEOMETRIES_KEPT = 50  # versions per camera in the worker's state (SQL keeps them all)


class FleetStatus:
    """Keeps one state record per camera and emits status and alert rows."""

    def __init__(self, config: AlertConfig, clock: Callable[[], int]) -> None:
        self.config = config
        self.clock = clock  # wall clock, ms: versions and the offline sweep
        self._last_version = 0

    def _version(self) -> int:
        # Grows even if two rows are emitted within one millisecond.
        self._last_version = max(self._last_version + 1, self.clock())
        return self._last_version

    @staticmethod
    def _state(cameras: MutableMapping[str, Any], camera_id: str, site: str) -> dict[str, Any]:
        state = cameras.get(camera_id)
        if state is None:
            return {
                "site": site, "last_heard_at": 0, "last_event_at": 0, "online": True, "online_since": 0,
                "seqs": [], "depths": [], "outbox_backlog": None, "outbox_age_s": None, "dropped_events": None,
                "health_ts": 0, "model_version": None, "alerts": {}, "zones": {}, "geometries": {},
                "clock_offset_s": None, "clock_samples": [],
                "video_state": None, "video_reconnects": None, "video_lost_s": None, "tamper": None,
                "frames_missed": None, "frames_missed_share": None, "crowding": None,
            }
        # .get: states saved before geometry and clocks were kept
        return {**state, "alerts": dict(state["alerts"]), "zones": dict(state["zones"]), "geometries": dict(state.get("geometries", {}))}

    def observe(
        self, cameras: MutableMapping[str, Any], events: Iterable[tuple[Incoming, Event, bool]],
        late: Iterable[tuple[Incoming, Event]] = (),
    ) -> list[Row]:
        """Fold a batch of valid events (each with: is it new?) into ``cameras`` (camera id -> state); the rows that changed."""
        states: dict[str, dict[str, Any]] = {}
        received: dict[str, SeqSet] = {}  # per camera, while the batch lasts
        rows: list[Row] = []
        geometries: set[tuple[str, str]] = set()  # (camera, version) that changed
        events = events if isinstance(events, list) else list(events)
        i, n = 0, len(events)
        while i < n:
            # A run: the events of one record (one camera's, consecutive). What
            # the run does to the camera's state as a whole is done once: per
            # event it cost 0.9 us of the worker's 9 (issue 37); the rules
            # below read none of these fields.
            record, first, _ = events[i]
            camera_id = first.camera_id
            j = i + 1
            while j < n and events[j][0] is record and events[j][1].camera_id == camera_id:
                j += 1
            run = events[i:j]
            i = j
            state = states.get(camera_id)
            if state is None:
                state = states[camera_id] = self._state(cameras, camera_id, first.site)
                received[camera_id] = SeqSet(state["seqs"])
            if record.timestamp_ms > state["last_heard_at"]:
                state["last_heard_at"] = record.timestamp_ms
            state["last_event_at"] = max(state["last_event_at"], max(e.ts for _, e, _ in run))
            if not state["online"]:
                state["online"], state["online_since"] = True, record.timestamp_ms
            received[camera_id].add_many([e.seq for _, e, _ in run])
            for _, event, fresh in run:
                state["site"] = event.site
                if "geometry" in event.data or event.type == "geometry":
                    version = self._geometry(event, state)
                    if version:
                        geometries.add((camera_id, version))
                if not fresh:
                    continue
                if event.type == "health" and event.ts > state["health_ts"]:
                    self._health(record, event, state, rows)
                elif event.type == "occupancy":
                    self._occupancy(event, state, rows)
        for record, event in late:
            rows.append(Row(LATE_EVENTS.name, {
                "camera_id": event.camera_id, "seq": event.seq, "site": event.site, "event_ts": event.ts,
                "type": event.type, "arrived_at": record.timestamp_ms,
                "age_s": round((record.timestamp_ms - event.ts) / 1000, 1),
            }))
        for camera_id, version in sorted(geometries):
            rows.append(self._geometry_row(camera_id, version, states[camera_id]))
        for camera_id, state in states.items():
            state["seqs"] = received[camera_id].ranges
            cameras[camera_id] = state  # one state write per camera per batch
            rows.append(self.status_row(camera_id, state))
        return rows

    def sweep(self, cameras: MutableMapping[str, Any], owns: Callable[[str], bool]) -> list[Row]:
        """Time passing in ``cameras``: cameras going offline, offline alerts clearing."""
        now = self.clock()
        rows: list[Row] = []
        for camera_id, stored in list(cameras.items()):
            if not stored or not owns(camera_id):
                continue
            state = self._state(cameras, camera_id, stored["site"])
            changed = False
            silent = now - state["last_heard_at"]
            if state["online"] and silent > self.config.offline_after_s * 1000:
                state["online"] = False
                changed = True
                self._open(state, camera_id, "offline", "", state["last_heard_at"], f"nothing heard for {silent / 1000:.0f} s", rows)
            elif state["online"] and now - state["online_since"] >= self.config.clear_after_s * 1000:
                changed |= self._close(state, "offline", "", now, rows)
            if changed:
                cameras[camera_id] = state
                rows.append(self.status_row(camera_id, state))
        return rows

    # --- rules --------------------------------------------------------------------

    @staticmethod
    def _geometry(event: Event, state: dict[str, Any]) -> str | None:
        """Note the geometry version ``event`` names (first and last seen, the lines and zones); the version if that changed."""
        d = event.data
        version: str | None = d.get("version") if event.type == "geometry" else d.get("geometry")
        if not version:
            return None
        known = state["geometries"].get(version)
        seen: dict[str, Any] = dict(known) if known else {"first": event.ts, "last": event.ts, "definition": None}
        seen["first"], seen["last"] = min(seen["first"], event.ts), max(seen["last"], event.ts)
        if event.type == "geometry":
            seen["definition"] = {"lines": d["lines"], "zones": d["zones"]}
        if seen == known:
            return None
        state["geometries"][version] = seen
        if len(state["geometries"]) > GEOMETRIES_KEPT:
            oldest = min(state["geometries"], key=lambda v: state["geometries"][v]["last"])
            del state["geometries"][oldest]
        return version

    def _geometry_row(self, camera_id: str, version: str, state: dict[str, Any]) -> Row:
        seen = state["geometries"][version]
        return Row(CAMERA_GEOMETRY.name, {
            "camera_id": camera_id, "geometry": version, "site": state["site"], "definition": seen["definition"],
            "first_seen": seen["first"], "last_seen": seen["last"], "version": self._version(),
        })

    def _clock(self, record: Incoming, event: Event, state: dict[str, Any], rows: list[Row]) -> None:
        d = event.data
        if "clock_offset_s" in d:
            offset = float(d["clock_offset_s"])  # the node's own round-trip estimate
        elif d.get("outbox_age_s") is not None and d["outbox_age_s"] <= LIVE_AGE_S:
            samples = (state.get("clock_samples", []) + [(event.ts - record.timestamp_ms) / 1000])[-CLOCK_SAMPLES:]
            state["clock_samples"] = samples
            offset = max(samples)  # transit only ever makes a sample smaller
        else:
            return
        state["clock_offset_s"] = round(offset, 3)
        limit = self.config.clock_skew_s
        if abs(offset) > limit:
            way = "ahead of" if offset > 0 else "behind"
            self._open(state, event.camera_id, "clock_skew", "", record.timestamp_ms, f"camera clock {abs(offset):.1f} s {way} the cloud (limit {limit:g} s)", rows)
        elif abs(offset) <= 0.8 * limit:
            self._close(state, "clock_skew", "", record.timestamp_ms, rows)

    def _health(self, record: Incoming, event: Event, state: dict[str, Any], rows: list[Row]) -> None:
        d = event.data
        state["health_ts"] = event.ts
        self._clock(record, event, state, rows)
        for column, field_ in (
            ("outbox_backlog", "outbox_depth"), ("outbox_age_s", "outbox_age_s"), ("dropped_events", "dropped_events"),
            ("model_version", "model_version"), ("video_state", "video_state"), ("video_reconnects", "video_reconnects"),
            ("video_lost_s", "video_lost_s"),
        ):
            if field_ in d:
                state[column] = d[field_]
        self._video(event, state, rows)
        self._missed(event, state, rows)
        self._crowded(event, state, rows)
        if "outbox_depth" not in d:
            return
        depths = (state["depths"] + [d["outbox_depth"]])[-self.config.backlog_reports:]
        state["depths"] = depths
        rising = len(depths) == self.config.backlog_reports and all(a < b for a, b in zip(depths, depths[1:]))
        if rising and depths[-1] >= self.config.backlog_min:
            self._open(state, event.camera_id, "backlog", "", event.ts, f"outbox depth rising: {depths}", rows)
        elif depths[-1] < self.config.backlog_min:
            self._close(state, "backlog", "", event.ts, rows)

    def _video(self, event: Event, state: dict[str, Any], rows: list[Row]) -> None:
        d = event.data
        video = d.get("video_state")
        if video in ("stalled", "down"):
            lost = f", {d['video_lost_s']:.0f} s of video lost so far" if "video_lost_s" in d else ""
            self._open(state, event.camera_id, "video_down", "", event.ts, f"video {video}{lost}", rows)
        elif video == "ok":
            self._close(state, "video_down", "", event.ts, rows)
        if "tamper" not in d:
            return
        kinds = sorted(d["tamper"])
        state["tamper"] = ",".join(kinds) or None
        for kind in kinds:
            self._open(state, event.camera_id, "tamper", kind, event.ts, f"view {kind} against the camera's reference", rows)
        for name in [n for n in state["alerts"] if n.startswith("tamper|") and n.split("|", 1)[1] not in kinds]:
            self._close(state, "tamper", name.split("|", 1)[1], event.ts, rows)

    def _missed(self, event: Event, state: dict[str, Any], rows: list[Row]) -> None:
        d = event.data
        if "frames_missed" not in d:
            return  # a file source, or a node from before frames_missed
        missed = d["frames_missed"]
        arrived = missed + d.get("frames", 0)
        share = missed / arrived if arrived else 0.0
        state["frames_missed"], state["frames_missed_share"] = missed, round(share, 4)
        limit = self.config.missed_share
        if share > limit and arrived >= MISSED_MIN_FRAMES:
            detail = f"missed {missed} of {arrived} live frames ({share:.0%}; limit {limit:.0%}): the box is busier than it can keep up with"
            self._open(state, event.camera_id, "overloaded", "", event.ts, detail, rows)
        elif share <= limit / 2:
            self._close(state, "overloaded", "", event.ts, rows)

    def _crowded(self, event: Event, state: dict[str, Any], rows: list[Row]) -> None:
        d = event.data
        seen = d.get("people_seen", 0)  # a node from before the crowding signal sends none
        if seen < CROWDING_MIN_PEOPLE:
            return
        share = d.get("people_overlapping", 0) / seen
        state["crowding"] = round(share, 4)
        limit = self.config.crowding_share
        if share > limit:
            detail = (f"{share:.0%} of the {seen} people seen overlapped another (limit {limit:.0%}): people hide each other "
                      "here and the counts run low; a higher camera looking down sees them apart")
            self._open(state, event.camera_id, "crowded", "", event.ts, detail, rows)
        elif share <= 0.8 * limit:
            self._close(state, "crowded", "", event.ts, rows)

    def _occupancy(self, event: Event, state: dict[str, Any], rows: list[Row]) -> None:
        zone = event.data["zone"]
        for rule in self.config.occupancy:
            if rule.zone != zone or rule.camera_id not in (None, event.camera_id):
                continue
            counts = event.data["counts"]
            value = counts.get(rule.object_class, 0) if rule.object_class else sum(counts.values())
            subject = zone if rule.object_class is None else f"{zone}/{rule.object_class}"
            track = dict(state["zones"].get(subject) or {"above_since": None, "below_since": None, "ts": 0})
            if event.ts <= track["ts"]:
                continue  # older than what the rule has seen: out of order
            track["ts"] = event.ts
            if value > rule.max:
                track["below_since"] = None
                track["above_since"] = track["above_since"] or event.ts
                if event.ts - track["above_since"] >= rule.for_s * 1000:
                    self._open(state, event.camera_id, "occupancy", subject, track["above_since"], f"{value} inside (limit {rule.max})", rows)
            else:
                track["above_since"] = None
                track["below_since"] = track["below_since"] or event.ts
                if event.ts - track["below_since"] >= rule.for_s * 1000:
                    self._close(state, "occupancy", subject, event.ts, rows)
            state["zones"][subject] = track

    def _open(self, state: dict[str, Any], camera_id: str, kind: str, subject: str, since: int, detail: str, rows: list[Row]) -> None:
        name = f"{kind}|{subject}"
        if name in state["alerts"]:
            return  # already open: one alert per episode
        alert_id = f"{camera_id}|{kind}|{subject}|{since}"
        state["alerts"][name] = {"id": alert_id, "opened_at": since, "detail": detail}
        rows.append(self._alert_row(camera_id, state, kind, subject, state["alerts"][name], "open", None, 1))

    def _close(self, state: dict[str, Any], kind: str, subject: str, at: int, rows: list[Row]) -> bool:
        alert = state["alerts"].pop(f"{kind}|{subject}", None)
        if alert is None:
            return False
        camera_id = alert["id"].split("|", 1)[0]
        rows.append(self._alert_row(camera_id, state, kind, subject, alert, "closed", at, 2))
        return True

    @staticmethod
    def _alert_row(camera_id: str, state: dict[str, Any], kind: str, subject: str, alert: dict[str, Any], status: str, closed_at: int | None, version: int) -> Row:
        return Row(ALERTS.name, {
            "alert_id": alert["id"], "camera_id": camera_id, "site": state["site"], "kind": kind, "subject": subject,
            "state": status, "opened_at": alert["opened_at"], "closed_at": closed_at, "detail": alert["detail"],
            "version": version,
        })

    def status_row(self, camera_id: str, state: dict[str, Any]) -> Row:
        seqs = SeqSet(state["seqs"])
        received = len(seqs)
        first, last = seqs.first, seqs.last
        return Row(CAMERA_STATUS.name, {
            "camera_id": camera_id, "site": state["site"], "online": state["online"],
            "last_heard_at": state["last_heard_at"], "last_event_at": state["last_event_at"] or None,
            "outbox_backlog": state["outbox_backlog"], "outbox_age_s": state["outbox_age_s"],
            "dropped_events": state["dropped_events"], "seq_first": first, "seq_last": last,
            "seq_received": received, "seq_gaps": (last - first + 1 - received) if first is not None and last is not None else 0,
            "model_version": state["model_version"], "clock_offset_s": state.get("clock_offset_s"),
            "video_state": state.get("video_state"), "video_reconnects": state.get("video_reconnects"),
            "video_lost_s": state.get("video_lost_s"), "tamper": state.get("tamper"),
            "frames_missed": state.get("frames_missed"), "frames_missed_share": state.get("frames_missed_share"),
            "crowding": state.get("crowding"), "version": self._version(),
        })
