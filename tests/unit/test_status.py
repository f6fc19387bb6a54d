"""Camera status and alerts: idempotent, with hysteresis."""

from __future__ import annotations

from schemas.codec import validate
from streams.aggregate import Incoming
from streams.status import AlertConfig, FleetStatus, OccupancyRule
from tests.support.clock import FakeClock

T0 = 1764072000000
SEC = 1000


def ev(seq: int, ts: int, type_: str, data: dict, camera: str = "cam-1"):
    event = validate({"v": 1, "camera_id": camera, "site": "s", "seq": seq, "ts": ts, "type": type_, "data": data})
    return Incoming(0, ts + 500, b""), event, True


def health(seq: int, ts: int, depth: int, **more):
    return ev(seq, ts, "health", {"uptime_s": 1.0, "outbox_depth": depth, **more})


def occupancy(seq: int, ts: int, people: int):
    return ev(seq, ts, "occupancy", {"zone": "till", "counts": {"person": people, "car": 0}})


def alerts(rows):
    return [(r.values["kind"], r.values["subject"], r.values["state"]) for r in rows if r.table == "alerts"]


def status(rows):
    return [r.values for r in rows if r.table == "camera_status"][-1]


def test_status_tracks_seqs_gaps_backlog_and_model() -> None:
    fleet = FleetStatus(AlertConfig(), FakeClock(T0))
    cameras: dict = {}
    rows = fleet.observe(cameras, [health(1, T0, 5, model_version="m@1", dropped_events=2), health(2, T0 + SEC, 3), health(5, T0 + 2 * SEC, 4)])
    s = status(rows)
    assert (s["seq_first"], s["seq_last"], s["seq_received"], s["seq_gaps"]) == (1, 5, 3, 2)
    assert (s["outbox_backlog"], s["model_version"], s["dropped_events"], s["online"]) == (4, "m@1", 2, True)
    # Replaying the same events changes nothing but the version.
    again = status(fleet.observe(cameras, [health(1, T0, 5), health(2, T0 + SEC, 3)]))
    assert {k: v for k, v in again.items() if k != "version"} == {k: v for k, v in s.items() if k != "version"}
    assert again["version"] > s["version"]


def test_an_older_health_report_does_not_overwrite_a_newer_one() -> None:
    fleet = FleetStatus(AlertConfig(), FakeClock(T0))
    cameras: dict = {}
    fleet.observe(cameras, [health(9, T0 + 60 * SEC, 7)])
    assert status(fleet.observe(cameras, [health(3, T0, 500)]))["outbox_backlog"] == 7


def test_offline_opens_once_and_clears_after_the_camera_is_back_for_a_while() -> None:
    clock = FakeClock(T0)
    fleet = FleetStatus(AlertConfig(offline_after_s=120, clear_after_s=60), clock)
    cameras: dict = {}
    fleet.observe(cameras, [health(1, T0, 0)])
    clock.now = T0 + 100 * SEC
    assert fleet.sweep(cameras, lambda c: True) == []
    clock.now = T0 + 130 * SEC
    rows = fleet.sweep(cameras, lambda c: True)
    assert alerts(rows) == [("offline", "", "open")] and status(rows)["online"] is False
    clock.now = T0 + 200 * SEC
    assert fleet.sweep(cameras, lambda c: True) == []  # still offline: no second alert
    back = fleet.observe(cameras, [health(2, T0 + 210 * SEC, 0)])
    assert status(back)["online"] is True and alerts(back) == []
    clock.now = T0 + 240 * SEC
    assert fleet.sweep(cameras, lambda c: True) == []  # back for 30 s only
    clock.now = T0 + 280 * SEC
    assert alerts(fleet.sweep(cameras, lambda c: True)) == [("offline", "", "closed")]


def test_sweep_leaves_cameras_of_other_workers_alone() -> None:
    clock = FakeClock(T0)
    fleet = FleetStatus(AlertConfig(offline_after_s=1), clock)
    cameras: dict = {}
    fleet.observe(cameras, [health(1, T0, 0)])
    clock.now = T0 + 60 * SEC
    assert fleet.sweep(cameras, lambda c: False) == []


def test_backlog_alert_needs_rising_depth_over_the_minimum() -> None:
    fleet = FleetStatus(AlertConfig(backlog_min=100, backlog_reports=3), FakeClock(T0))
    cameras: dict = {}
    assert alerts(fleet.observe(cameras, [health(1, T0, 50), health(2, T0 + 1, 150), health(3, T0 + 2, 140)])) == []
    opened = fleet.observe(cameras, [health(4, T0 + 3, 200), health(5, T0 + 4, 300)])
    assert alerts(opened) == [("backlog", "", "open")]
    assert alerts(fleet.observe(cameras, [health(6, T0 + 5, 400), health(7, T0 + 6, 500)])) == []  # still the same episode
    assert alerts(fleet.observe(cameras, [health(8, T0 + 7, 20)])) == [("backlog", "", "closed")]


def test_occupancy_alert_with_hysteresis_does_not_storm_on_flapping() -> None:
    rule = OccupancyRule(zone="till", max=3, for_s=60)
    fleet = FleetStatus(AlertConfig(occupancy=(rule,)), FakeClock(T0))
    cameras: dict = {}
    # Over the limit for 50 s, under for 10 s, over again: never 60 s in a row.
    flapping = [occupancy(i, T0 + i * 10 * SEC, 5 if i % 6 else 1) for i in range(1, 12)]
    assert alerts(fleet.observe(cameras, flapping)) == []
    steady = [occupancy(20 + i, T0 + (200 + i * 10) * SEC, 6) for i in range(8)]
    assert alerts(fleet.observe(cameras, steady)) == [("occupancy", "till", "open")]
    dip = [occupancy(40 + i, T0 + (300 + i * 10) * SEC, 2 if i % 3 else 9) for i in range(9)]
    assert alerts(fleet.observe(cameras, dip)) == []  # under the limit, but never 60 s in a row
    calm = [occupancy(60 + i, T0 + (400 + i * 10) * SEC, 1) for i in range(8)]
    closed = alerts(fleet.observe(cameras, calm))
    assert closed == [("occupancy", "till", "closed")]


def test_duplicates_and_stragglers_do_not_move_the_alert_rules() -> None:
    rule = OccupancyRule(zone="till", max=3, for_s=60)
    fleet = FleetStatus(AlertConfig(occupancy=(rule,)), FakeClock(T0))
    cameras: dict = {}
    steady = [occupancy(i, T0 + i * 30 * SEC, 6) for i in range(1, 5)]
    assert alerts(fleet.observe(cameras, steady)) == [("occupancy", "till", "open")]
    # Old quiet readings come again (a resend) and out of order: no close.
    stragglers = [occupancy(i, T0 - i * 30 * SEC, 0) for i in range(1, 6)]
    stale = [(r, e, False) for r, e, _ in [occupancy(i, T0 + i * 30 * SEC, 0) for i in range(1, 5)]]
    assert alerts(fleet.observe(cameras, stragglers + stale)) == []


def test_late_events_become_rows() -> None:
    fleet = FleetStatus(AlertConfig(), FakeClock(T0))
    cameras: dict = {}
    _, event, _ = health(4, T0, 0)
    rows = fleet.observe(cameras, [], late=[(Incoming(0, T0 + 90_000 * SEC, b""), event)])
    [late] = [r.values for r in rows if r.table == "late_events"]
    assert (late["camera_id"], late["seq"], late["type"], late["age_s"]) == ("cam-1", 4, "health", 90000.0)


def test_clock_skew_from_the_nodes_own_estimate_opens_and_closes_an_alert() -> None:
    fleet = FleetStatus(AlertConfig(clock_skew_s=5.0), FakeClock(T0))
    cameras: dict = {}
    rows = fleet.observe(cameras, [health(1, T0, 0, clock_offset_s=-7.25, clock_error_s=0.01)])
    assert alerts(rows) == [("clock_skew", "", "open")] and status(rows)["clock_offset_s"] == -7.25
    assert "7.2 s behind" in [r.values["detail"] for r in rows if r.table == "alerts"][0]
    assert alerts(fleet.observe(cameras, [health(2, T0 + SEC, 0, clock_offset_s=4.5)])) == []  # hysteresis: not yet below 4 s
    assert alerts(fleet.observe(cameras, [health(3, T0 + 2 * SEC, 0, clock_offset_s=0.2)])) == [("clock_skew", "", "closed")]


def test_clock_offset_from_live_health_reports_takes_the_least_delayed_and_ignores_backlog() -> None:
    fleet = FleetStatus(AlertConfig(clock_skew_s=5.0), FakeClock(T0))
    cameras: dict = {}

    def sent(seq: int, ts: int, arrived: int, age: float):
        _, event, fresh = health(seq, ts, 0, outbox_age_s=age)
        return Incoming(0, arrived, b""), event, fresh

    # A camera 8 s ahead: its reports arrive 0.2-2 s after they were made, by the cloud's clock.
    rows = fleet.observe(cameras, [sent(1, T0 + 8000, T0 + 2000, 0.1), sent(2, T0 + 38_000, T0 + 30_200, 0.3)])
    assert status(rows)["clock_offset_s"] == 7.8 and alerts(rows) == [("clock_skew", "", "open")]
    # A report that waited in the outbox (made with a backlog) says nothing about the clock.
    rows = fleet.observe(cameras, [sent(3, T0 + 60_000, T0 + 3_600_000, 600.0)])
    assert status(rows)["clock_offset_s"] == 7.8


def test_geometry_versions_are_kept_with_their_lines_and_first_and_last_seen() -> None:
    fleet = FleetStatus(AlertConfig(), FakeClock(T0))
    cameras: dict = {}
    version = "0123456789abcdef"
    geometry = {"version": version, "lines": [{"name": "door", "a": [0.1, 0.5], "b": [0.9, 0.5]}], "zones": []}
    cross = {"track_id": 1, "class": "person", "line": "door", "direction": "in", "geometry": version}
    rows = fleet.observe(cameras, [ev(1, T0, "geometry", geometry), ev(2, T0 + 5 * SEC, "line.cross", cross)])
    [row] = [r.values for r in rows if r.table == "camera_geometry"]
    assert (row["geometry"], row["first_seen"], row["last_seen"]) == (version, T0, T0 + 5 * SEC)
    assert row["definition"] == {"lines": geometry["lines"], "zones": []}
    # A replay changes nothing, so no row.
    assert [r for r in fleet.observe(cameras, [ev(2, T0 + 5 * SEC, "line.cross", cross)]) if r.table == "camera_geometry"] == []


def test_video_down_opens_on_a_stall_and_closes_when_video_is_back() -> None:
    fleet = FleetStatus(AlertConfig(), FakeClock(T0))
    cameras: dict = {}
    rows = fleet.observe(cameras, [health(1, T0, 0, video_state="ok", video_reconnects=0, video_lost_s=0.0)])
    assert alerts(rows) == [] and status(rows)["video_state"] == "ok"
    rows = fleet.observe(cameras, [health(2, T0 + SEC, 0, video_state="stalled", video_reconnects=0, video_lost_s=2.1)])
    assert alerts(rows) == [("video_down", "", "open")]
    # Still down, now refused: the same episode, no second alert.
    rows = fleet.observe(cameras, [health(3, T0 + 5 * SEC, 0, video_state="down", video_reconnects=3, video_lost_s=6.0)])
    assert alerts(rows) == []
    s = status(rows)
    assert (s["video_state"], s["video_reconnects"], s["video_lost_s"]) == ("down", 3, 6.0)
    rows = fleet.observe(cameras, [health(4, T0 + 9 * SEC, 0, video_state="ok", video_reconnects=4, video_lost_s=8.5)])
    assert alerts(rows) == [("video_down", "", "closed")] and status(rows)["video_state"] == "ok"


def test_tamper_alert_per_kind_opens_and_closes_with_the_reports() -> None:
    fleet = FleetStatus(AlertConfig(), FakeClock(T0))
    cameras: dict = {}
    assert alerts(fleet.observe(cameras, [health(1, T0, 0, tamper=[])])) == []
    rows = fleet.observe(cameras, [health(2, T0 + SEC, 0, tamper=["moved"])])
    assert alerts(rows) == [("tamper", "moved", "open")] and status(rows)["tamper"] == "moved"
    rows = fleet.observe(cameras, [health(3, T0 + 2 * SEC, 0, tamper=["blocked", "moved"])])
    assert alerts(rows) == [("tamper", "blocked", "open")] and status(rows)["tamper"] == "blocked,moved"
    rows = fleet.observe(cameras, [health(4, T0 + 3 * SEC, 0, tamper=[])])
    assert sorted(alerts(rows)) == [("tamper", "blocked", "closed"), ("tamper", "moved", "closed")]
    assert status(rows)["tamper"] is None
    # A report that says nothing of tamper (an older node) changes nothing.
    assert alerts(fleet.observe(cameras, [health(5, T0 + 4 * SEC, 0)])) == []


def test_overloaded_opens_when_a_node_misses_more_than_its_share_of_live_frames_and_closes_at_half() -> None:
    fleet = FleetStatus(AlertConfig(missed_share=0.2), FakeClock(T0))
    cameras: dict = {}
    rows = fleet.observe(cameras, [health(1, T0, 0, frames=300, frames_missed=3)])
    assert alerts(rows) == [] and (status(rows)["frames_missed"], status(rows)["frames_missed_share"]) == (3, 0.0099)
    # 5 cameras on a box that can run 4: half the frames go by untaken.
    rows = fleet.observe(cameras, [health(2, T0 + SEC, 0, frames=150, frames_missed=150)])
    assert alerts(rows) == [("overloaded", "", "open")] and status(rows)["frames_missed_share"] == 0.5
    assert "150 of 300" in next(r.values["detail"] for r in rows if r.table == "alerts")
    # Better, but not below half the limit: the same episode goes on.
    assert alerts(fleet.observe(cameras, [health(3, T0 + 2 * SEC, 0, frames=255, frames_missed=45)])) == []
    rows = fleet.observe(cameras, [health(4, T0 + 3 * SEC, 0, frames=297, frames_missed=3)])
    assert alerts(rows) == [("overloaded", "", "closed")]
    # A report without the field (a file source, an older node) keeps what was known.
    rows = fleet.observe(cameras, [health(5, T0 + 4 * SEC, 0, frames=300)])
    assert alerts(rows) == [] and status(rows)["frames_missed"] == 3


def test_a_report_over_a_few_frames_does_not_open_overloaded() -> None:
    fleet = FleetStatus(AlertConfig(missed_share=0.2), FakeClock(T0))
    cameras: dict = {}
    # A stream just back: 3 frames taken, 4 missed in the burst; the share says nothing yet.
    rows = fleet.observe(cameras, [health(1, T0, 0, frames=3, frames_missed=4)])
    assert alerts(rows) == [] and status(rows)["frames_missed"] == 4
    assert alerts(fleet.observe(cameras, [health(2, T0 + SEC, 0, frames=12, frames_missed=8)])) == [("overloaded", "", "open")]


def test_crowded_opens_when_people_hide_each_other_and_closes_at_four_fifths_of_the_limit() -> None:
    fleet = FleetStatus(AlertConfig(crowding_share=0.2), FakeClock(T0))
    cameras: dict = {}
    # A square seen from high up: few people overlap.
    rows = fleet.observe(cameras, [health(1, T0, 0, people_seen=400, people_overlapping=32)])
    assert alerts(rows) == [] and status(rows)["crowding"] == 0.08
    # A shop front at hip height: a third of the people hide behind another.
    rows = fleet.observe(cameras, [health(2, T0 + SEC, 0, people_seen=300, people_overlapping=105)])
    assert alerts(rows) == [("crowded", "", "open")] and status(rows)["crowding"] == 0.35
    assert "35% of the 300 people" in next(r.values["detail"] for r in rows if r.table == "alerts")
    # Just under the limit: the same episode goes on; a report over a few people says nothing.
    assert alerts(fleet.observe(cameras, [health(3, T0 + 2 * SEC, 0, people_seen=100, people_overlapping=18)])) == []
    rows = fleet.observe(cameras, [health(4, T0 + 3 * SEC, 0, people_seen=10, people_overlapping=0)])
    assert alerts(rows) == [] and status(rows)["crowding"] == 0.18
    assert alerts(fleet.observe(cameras, [health(5, T0 + 4 * SEC, 0, people_seen=100, people_overlapping=16)])) == [("crowded", "", "closed")]
    # A node from before the signal sends neither field: nothing changes.
    rows = fleet.observe(cameras, [health(6, T0 + 5 * SEC, 0)])
    assert alerts(rows) == [] and status(rows)["crowding"] == 0.16
