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
    assert occ.data == {"zone": "room", "counts": {"bicycle": 0, "car": 0, "person": 2}, "geometry": scene.geometry}


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


# --- counting across what the tracker gets wrong (held events, joins) ---------------------------

MIDDLE = Line("middle", (0.55, 0.0), (0.55, 1.0))  # vertical: "in" is leftwards


def step(scene: Scene, t: float, *obs: tuple[int, tuple[float, float]], height: float = 0.1):
    """One frame at time ``t`` with (tracker id, anchor) observations."""
    return scene.update(int(t * 1000), t, [
        Observation(tid, "person", 0.8, p, (p[0] - 0.02, p[1] - height, p[0] + 0.02, p[1])) for tid, p in obs
    ])


def test_occlusion_gap_a_new_id_where_the_lost_track_should_be_is_the_same_walker() -> None:
    scene = Scene([DOOR], join_s=2.0)
    events = []
    for i in range(5):  # walking down at 0.1 per second, above the door
        events += step(scene, i * 0.2, (1, (0.5, 0.30 + 0.02 * i)))
    # Hidden for 1.4 s (behind a post), crossing the door meanwhile; found again under a new id.
    for i in range(12, 16):
        events += step(scene, i * 0.2, (2, (0.5, 0.30 + 0.02 * i + 0.1)))
    events += scene.end_all(5000)
    assert len(kinds(events, "track.start")) == 1
    assert [(d["track_id"], d["direction"]) for d in kinds(events, "line.cross")] == [(1, "in")]


def test_without_joining_the_same_gap_loses_the_crossing() -> None:
    scene = Scene([DOOR], join_s=0.0)
    events = []
    for i in range(5):
        events += step(scene, i * 0.2, (1, (0.5, 0.30 + 0.02 * i)))
    for i in range(12, 16):
        events += step(scene, i * 0.2, (2, (0.5, 0.30 + 0.02 * i + 0.1)))
    assert len(kinds(events, "track.start")) == 2 and kinds(events, "line.cross") == []


def test_two_walkers_crossing_each_other_are_joined_by_their_pace_not_their_last_place() -> None:
    line = Line("middle", (0.52, 0.0), (0.52, 1.0))  # vertical: "in" is leftwards
    scene = Scene([line], join_s=2.0)
    events = []
    # A walks right, B walks left, 0.2 per second; both lost as they meet, either side of the line.
    for i in range(5):
        t = i * 0.1
        events += step(scene, t, (1, (0.40 + 0.2 * t, 0.5)), (2, (0.64 - 0.2 * t, 0.52)))
    a, b = sorted(d["track_id"] for d in kinds(events, "track.start"))
    # 0.8 s later each is found under a new id where its own pace put it: each
    # nearer the other's last place than its own.
    for i in range(12, 16):
        t = i * 0.1
        events += step(scene, t, (7, (0.40 + 0.2 * t, 0.5)), (8, (0.64 - 0.2 * t, 0.52)))
    events += scene.end_all(9000)
    assert len(kinds(events, "track.start")) == 2
    assert sorted((d["track_id"], d["direction"]) for d in kinds(events, "line.cross")) == [(a, "out"), (b, "in")]


def test_a_walker_turning_back_inside_the_band_counts_nothing_and_one_who_returns_counts_twice() -> None:
    scene = Scene([DOOR], margin=0.02)
    turned = run(scene, [(0.5, y) for y in (0.40, 0.45, 0.49, 0.515, 0.49, 0.45, 0.40)])
    assert kinds(turned, "line.cross") == []
    back = run(scene, [(0.5, y) for y in (0.40, 0.47, 0.53, 0.60, 0.53, 0.47, 0.40)], track_id=2, t0=1.0)
    assert [d["direction"] for d in kinds(back, "line.cross")] == ["in", "out"]


def test_a_jump_over_the_band_at_a_low_frame_rate_is_a_crossing() -> None:
    scene = Scene([DOOR], margin=0.02)
    events = run(scene, [(0.5, 0.40), (0.5, 0.47), (0.5, 0.56), (0.5, 0.62)], dt=0.3)
    assert [d["direction"] for d in kinds(events, "line.cross")] == ["in"]


def test_a_track_confirmed_after_the_line_still_counts_what_it_did_before() -> None:
    scene = Scene([DOOR], [ROOM], min_hits=3, zone_frames=1)
    first = run(scene, [(0.5, 0.45), (0.5, 0.58)])
    assert first == []  # not confirmed yet: held
    events = run(scene, [(0.5, 0.65)], t0=0.2)
    assert [e.type for e in events] == ["track.start", "line.cross", "zone.enter"]


def test_a_track_never_confirmed_counts_nothing() -> None:
    scene = Scene([DOOR], [ROOM], min_hits=3, track_timeout_s=1.0)
    events = run(scene, [(0.5, 0.45), (0.5, 0.65)])
    events += scene.expire(5000, 5.0)
    events += scene.occupancy(5000)
    assert [e.type for e in events] == ["occupancy"] and events[0].data["counts"] == {}


def test_a_track_lost_walking_out_of_the_picture_ends_at_once() -> None:
    scene = Scene([], [ROOM], track_timeout_s=5.0)
    run(scene, [(0.90 + 0.03 * i, 0.8) for i in range(3)])
    events = scene.update(3000, 0.4, [])  # unseen; at its pace it is beyond the right edge
    assert [e.type for e in events] == ["zone.exit", "track.end"]


def test_a_lost_track_that_stays_in_the_picture_waits_for_the_timeout() -> None:
    scene = Scene([], [ROOM], track_timeout_s=2.0)
    run(scene, [(0.50, 0.8), (0.50, 0.8)])
    assert scene.update(3000, 1.0, []) == []
    assert [e.type for e in scene.update(4000, 2.5, [])] == ["zone.exit", "track.end"]


def test_a_box_wobbling_on_a_zone_border_is_not_an_entry() -> None:
    scene = Scene([], [ROOM], margin=0.02, zone_frames=1)
    wobble = [(0.5, 0.6 + (0.015 if i % 2 else -0.015)) for i in range(20)]
    events = run(scene, [(0.5, 0.5)] + wobble)
    assert kinds(events, "zone.enter") == []


def test_events_carry_the_geometry_version_and_it_follows_the_points() -> None:
    scene = Scene([DOOR], [ROOM])
    events = run(scene, [(0.5, 0.3), (0.5, 0.4), (0.5, 0.7), (0.5, 0.7)])
    tagged = [e for e in events if e.type in ("line.cross", "zone.enter")]
    assert tagged and {e.data["geometry"] for e in tagged} == {scene.geometry}
    assert Scene([DOOR], [ROOM]).geometry == scene.geometry  # a content hash: same lines, same version
    moved = Line("door", (0.2, 0.55), (0.8, 0.55))
    assert Scene([moved], [ROOM]).geometry != scene.geometry
    assert Scene().geometry == "" and "geometry" not in kinds(run(Scene(), [(0.5, 0.3)]), "track.start")[0]


def test_a_restart_with_a_moved_line_does_not_take_over_the_old_lines_state() -> None:
    scene = Scene([DOOR], [ROOM])
    run(scene, [(0.5, 0.3), (0.5, 0.4), (0.5, 0.7), (0.5, 0.7)])  # crossed in, now inside the room
    saved, old = scene.snapshot(now=0.3), scene.geometry

    moved = Line("door", (0.2, 0.8), (0.8, 0.8))  # the operator moved the line below the walker
    after = Scene([moved], [ROOM])
    after.restore(saved, now=0.0)
    again = run(after, [(0.51, 0.72), (0.52, 0.74), (0.5, 0.9)], track_id=7)
    # Still one object (no new track.start); its stay in the old room ends under the old version,
    # and it re-enters under the new one; the new line counts from where it is next seen.
    assert kinds(again, "track.start") == []
    exits = kinds(again, "zone.exit")
    assert [(d["zone"], d["geometry"]) for d in exits] == [("room", old)]
    assert [d["geometry"] for d in kinds(again, "zone.enter")] == [after.geometry]
    assert [(d["direction"], d["geometry"]) for d in kinds(again, "line.cross")] == [("in", after.geometry)]


def test_a_restart_with_the_same_geometry_keeps_the_state() -> None:
    scene = Scene([DOOR], [ROOM])
    run(scene, [(0.5, 0.3), (0.5, 0.4), (0.5, 0.7), (0.5, 0.7)])
    after = Scene([DOOR], [ROOM])
    after.restore(scene.snapshot(now=0.3), now=0.0)
    again = run(after, [(0.51, 0.72), (0.52, 0.74)], track_id=7)
    assert kinds(again, "zone.exit") == [] and kinds(again, "zone.enter") == [] and kinds(again, "line.cross") == []


def test_a_crossing_waits_for_the_object_to_stay_on_the_new_side() -> None:
    scene = Scene([DOOR], cross_s=1.0)
    over = run(scene, [(0.5, y) for y in (0.3, 0.4, 0.6, 0.62, 0.64)])  # 0.2 s over the line
    assert kinds(over, "line.cross") == []
    stayed = run(scene, [(0.5, 0.65)] * 10, t0=0.5)  # seen there 1 s after it crossed
    assert [d["direction"] for d in kinds(stayed, "line.cross")] == ["in"]


def test_a_box_hopping_over_a_line_and_back_counts_nothing() -> None:
    # A box that jumps to the other side and back within cross_s (legs hidden,
    # or the box taken by a neighbour walking along the line) is no crossing.
    scene = Scene([DOOR], cross_s=1.0)
    path = [(0.3 + 0.01 * i, 0.45 if (i // 3) % 2 else 0.56) for i in range(33)]  # ends where it began
    assert kinds(run(scene, path) + scene.end_all(9999), "line.cross") == []
    assert kinds(run(Scene([DOOR], cross_s=0.0), path), "line.cross")  # counted at once, it would count


def test_a_track_that_ends_over_the_line_still_counts_its_crossing() -> None:
    scene = Scene([DOOR], cross_s=1.0)
    events = run(scene, [(0.5, y) for y in (0.3, 0.4, 0.6, 0.7)])
    assert kinds(events, "line.cross") == []
    assert [d["direction"] for d in kinds(scene.end_all(2000), "line.cross")] == ["in"]


def test_a_pending_crossing_survives_a_restart_and_is_counted_once() -> None:
    scene = Scene([DOOR], cross_s=1.0)
    run(scene, [(0.5, y) for y in (0.3, 0.4, 0.6)])
    saved = scene.snapshot(0.2)
    again = Scene([DOOR], cross_s=1.0)
    again.restore(saved, 100.0)
    events = run(again, [(0.5, 0.62)] * 15, track_id=7, t0=100.0)
    assert [d["direction"] for d in kinds(events, "line.cross")] == ["in"]


def test_a_box_with_its_legs_hidden_keeps_its_feet_where_they_were() -> None:
    # The bottom rises by a third (someone walks in front) while the top
    # stays: the anchor stays at the feet, so a line just above them is not crossed.
    scene = Scene([DOOR], cross_s=0.0)
    whole, hidden = (0.45, 0.3, 0.55, 0.6), (0.45, 0.3, 0.55, 0.4)
    events = []
    for i, box in enumerate([whole] * 3 + [hidden] * 3 + [whole] * 3):
        anchor = ((box[0] + box[2]) / 2, box[3])
        events += scene.update(1000 + i, i * 0.1, [Observation(1, "person", 0.8, anchor, box)])
        assert abs(scene.tracks[1].anchor[1] - 0.6) < 1e-9
    assert kinds(events, "line.cross") == []


def test_a_person_walking_away_keeps_the_anchor_at_the_bottom_of_the_box() -> None:
    # Shrinking with the same shape is distance, not hidden legs.
    scene = Scene([], cross_s=0.0)
    for i in range(10):
        h = 0.5 - 0.03 * i
        box = (0.5 - h / 6, 0.2, 0.5 + h / 6, 0.2 + h)
        scene.update(1000 + i, i * 0.1, [Observation(1, "person", 0.8, (0.5, box[3]), box)])
        assert abs(scene.tracks[1].anchor[1] - box[3]) < 1e-9


def test_a_line_that_is_no_entrance_keeps_the_version_it_had_before_entrances() -> None:
    # The version a door and a room had before issue 38: every node and every row of camera_geometry keeps it.
    assert Scene([DOOR], [ROOM]).geometry == "c4a7c37807d19eb7"
    entrance = Line("door", (0.2, 0.5), (0.8, 0.5), entrance="in")
    assert Scene([entrance], [ROOM]).geometry != "c4a7c37807d19eb7"  # marking a door is a new version
    assert Scene([entrance], [ROOM]).geometry_doc["lines"] == [{"name": "door", "a": [0.2, 0.5], "b": [0.8, 0.5], "entrance": "in"}]
