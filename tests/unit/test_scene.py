"""Lines, zones and track lifecycle on exact synthetic tracks."""

from __future__ import annotations

from edge.scene import Line, Observation, Scene, Zone

DOOR = Line("door", (0.2, 0.5), (0.8, 0.5))  # left to right: "in" is downwards
ROOM = Zone("room", ((0.0, 0.6), (1.0, 0.6), (1.0, 1.0), (0.0, 1.0)))


def run(scene: Scene, path: list[tuple[float, float]], track_id: int = 1, t0: float = 0.0, dt: float = 0.1, cls: str = "person"):
    events = []
    for i, p in enumerate(path):
        events += scene.update(1000 + i, t0 + i * dt, [Observation(track_id, cls, 0.8, p)])
    return events


def kinds(events, type_: str):
    return [e.data for e in events if e.type == type_]


def test_crossing_counts_once_with_direction() -> None:
    scene = Scene([DOOR])
    events = run(scene, [(0.5, y) for y in (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)])
    assert [(d["line"], d["direction"]) for d in kinds(events, "line.cross")] == [("door", "in")]
    back = run(scene, [(0.5, y) for y in (0.7, 0.6, 0.5, 0.4, 0.3)], t0=1.0)
    assert [d["direction"] for d in kinds(back, "line.cross")] == ["out"]


def test_grazing_the_line_counts_nothing() -> None:
    scene = Scene([DOOR])
    events = run(scene, [(0.5, y) for y in (0.3, 0.4, 0.49, 0.51, 0.49, 0.4, 0.3)])
    assert kinds(events, "line.cross") == []


def test_jitter_on_the_line_counts_nothing() -> None:
    scene = Scene([DOOR], margin=0.02)
    wobble = [(0.5, 0.5 + (0.015 if i % 2 else -0.015)) for i in range(40)]
    events = run(scene, [(0.5, 0.4)] + wobble + [(0.5, 0.4)])
    assert kinds(events, "line.cross") == []


def test_passing_beside_the_segment_is_not_a_crossing() -> None:
    scene = Scene([DOOR])
    events = run(scene, [(0.95, y) for y in (0.3, 0.4, 0.6, 0.7)])
    assert kinds(events, "line.cross") == []


def test_appearing_beyond_the_line_is_not_a_crossing() -> None:
    scene = Scene([DOOR])
    assert kinds(run(scene, [(0.5, 0.7), (0.5, 0.75)]), "line.cross") == []


def test_zone_enter_exit_with_dwell_and_flicker_filtered() -> None:
    scene = Scene([], [ROOM], zone_frames=2)
    path = [(0.5, 0.4), (0.5, 0.5), (0.5, 0.61), (0.5, 0.59), (0.5, 0.65), (0.5, 0.7), (0.5, 0.8), (0.5, 0.8), (0.5, 0.5), (0.5, 0.4)]
    events = run(scene, path, dt=1.0)
    assert [e.type for e in events if e.type.startswith("zone")] == ["zone.enter", "zone.exit"]
    exit_ = kinds(events, "zone.exit")[0]
    assert exit_["zone"] == "room" and exit_["dwell_s"] == 4.0


def test_track_end_reports_dwell_class_zones_and_confidence() -> None:
    scene = Scene([], [ROOM], track_timeout_s=1.0)
    events = run(scene, [(0.5, 0.7)] * 5, dt=0.5)
    events += scene.expire(9999, 2.0 + 1.5)
    [start] = kinds(events, "track.start")
    [end] = kinds(events, "track.end")
    assert start["class"] == "person"
    assert end == {"track_id": start["track_id"], "class": "person", "dwell_s": 2.0, "max_confidence": 0.8, "zones": ["room"]}
    assert kinds(events, "zone.exit")[0]["dwell_s"] == 2.0


def test_occupancy_per_zone_and_class() -> None:
    scene = Scene([], [ROOM], classes=["person", "car", "bicycle"])
    scene.update(1, 0.0, [Observation(1, "person", 0.9, (0.5, 0.7)), Observation(2, "person", 0.9, (0.2, 0.9)), Observation(3, "car", 0.9, (0.5, 0.2))])
    [occ] = scene.occupancy(2)
    assert occ.data == {"zone": "room", "counts": {"bicycle": 0, "car": 0, "person": 2}}


def test_restart_takes_over_tracks_without_counting_twice() -> None:
    scene = Scene([DOOR], [ROOM])
    events = run(scene, [(0.5, 0.3), (0.5, 0.4), (0.5, 0.7), (0.5, 0.7)])
    assert len(kinds(events, "track.start")) == 1 and len(kinds(events, "zone.enter")) == 1
    saved = scene.snapshot(now=0.3)

    # A new process: the tracker's ids start again at 1 (here 7), the saved track is found again.
    after = Scene([DOOR], [ROOM])
    after.restore(saved, now=0.0)
    again = run(after, [(0.51, 0.72), (0.52, 0.74), (0.5, 0.4)], track_id=7)
    assert kinds(again, "track.start") == [] and kinds(again, "zone.enter") == []
    assert [d["direction"] for d in kinds(again, "line.cross")] == ["out"]
    assert {d["track_id"] for d in kinds(again, "line.cross")} == {1}


def test_saved_tracks_nobody_takes_over_are_ended() -> None:
    scene = Scene([], [ROOM])
    run(scene, [(0.5, 0.7)])
    after = Scene([], [ROOM], adopt_window_s=3.0, track_timeout_s=10.0)
    after.restore(scene.snapshot(0.0), now=10.0)
    events = after.update(5, 11.0, [Observation(1, "person", 0.9, (0.1, 0.1))])  # someone else
    assert kinds(events, "track.end") == []
    events = after.expire(6, 13.5)
    assert [e.type for e in events] == ["zone.exit", "track.end"]
    assert after.update(7, 14.0, [])[:1] == []


def test_new_track_ids_never_repeat_across_restarts() -> None:
    scene = Scene()
    first = kinds(run(scene, [(0.1, 0.1)], track_id=1), "track.start")[0]["track_id"]
    after = Scene()
    after.restore(scene.snapshot(0.0), now=0.0)
    second = kinds(run(after, [(0.9, 0.9)], track_id=1, t0=5.0), "track.start")[0]["track_id"]
    assert second > first
