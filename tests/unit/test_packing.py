"""Several MQTT messages of a camera in one Kafka record (streams.packing, Bridge.ship): same events, same order, same sums."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from aiokafka.errors import NotEnoughReplicasError

from runtime.settings import Settings
from schemas.codec import MAX_BATCH, decode, decode_validated
from streams.aggregate import Incoming, MinuteAggregator
from streams.bridge import Bridge, Outcome, Record
from streams.packing import PACK_EVENTS, Packer
from streams.status import AlertConfig, FleetStatus

NOW = 1764072000000
HOUR = 3_600_000


def ev(camera: str, seq: int, ts: int = NOW, type_: str = "track.start") -> dict:
    data = {"track_id": seq, "class": "person" if seq % 3 else "car", "confidence": 0.5}
    if type_ == "line.cross":
        data = {"track_id": seq, "class": "person", "line": "door", "direction": "in" if seq % 2 else "out"}
    elif type_ == "track.end":
        data = {"track_id": seq, "class": "person", "dwell_s": seq / 7, "max_confidence": 0.9}
    return {"v": 1, "camera_id": camera, "site": "s", "seq": seq, "ts": ts, "type": type_, "data": data}


def bridge() -> Bridge:
    return Bridge(Settings(kafka_partitions=8))


def handled(b: Bridge, messages: list[tuple[str, bytes]]) -> list[Outcome]:
    return [b.handle(f"fleetsight/cameras/{camera}/events", payload, NOW) for camera, payload in messages]


def test_one_message_goes_on_byte_for_byte_as_it_came() -> None:
    b = bridge()
    payload = json.dumps([ev("cam-1", 1), ev("cam-1", 2)], indent=2).encode() + b"\n"
    theirs, order = b.ship(handled(b, [("cam-1", payload)]))
    assert [s.record.value for s in order] == [payload] and theirs[0] == order


def test_a_cameras_messages_of_a_chunk_share_one_record_with_their_events_in_the_order_they_came() -> None:
    b = bridge()
    messages = [
        ("cam-1", json.dumps([ev("cam-1", 1), ev("cam-1", 2)]).encode()),
        ("cam-2", json.dumps(ev("cam-2", 1)).encode()),
        ("cam-1", b"  " + json.dumps(ev("cam-1", 3)).encode() + b"\n"),  # one event, not an array, with blanks
        ("cam-2", json.dumps([ev("cam-2", 2), ev("cam-1", 9)]).encode()),  # cam-1's event here is refused
        ("cam-1", b"[ " + json.dumps(ev("cam-1", 4)).encode() + b" ]"),
    ]
    outcomes = handled(b, messages)
    theirs, order = b.ship(outcomes)
    events = [s for s in order if s.record.topic == "fleetsight.events"]
    assert len(events) == 2  # one record per camera
    one, two = (next(s for s in events if s.record.key == key) for key in (b"cam-1", b"cam-2"))
    assert [e.seq for e in decode(one.record.value)] == [1, 2, 3, 4]
    assert [e.seq for e in decode(two.record.value)] == [1, 2]
    assert one.record.events == 4 and two.record.events == 2
    assert one.record.partition == outcomes[0].records[0].partition
    # Each message waits on its camera's record (and the refused event's dead letter on its own).
    assert [theirs[i] for i in (0, 2, 4)] == [[one]] * 3 and theirs[1] == [two]
    letter, events_of_cam_2 = theirs[3]  # the refusal came first
    assert events_of_cam_2 is two and letter.record.topic == "fleetsight.deadletter"


def test_a_pack_closes_at_its_limits_and_a_cameras_packs_go_in_the_order_they_were_opened() -> None:
    packer = Packer(10_000, max_events=5)
    for seq in range(1, 8):
        packer.add(b"cam-1", json.dumps([ev("cam-1", 2 * seq - 1), ev("cam-1", 2 * seq)]).encode(), 2)
    assert [[e.seq for e in decode(p.value())] for p in packer.packs] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14]]
    small = Packer(600, max_events=100)
    for seq in range(1, 6):
        small.add(b"cam-1", json.dumps(ev("cam-1", seq)).encode(), 1)
    assert all(len(p.value()) <= 600 for p in small.packs) and len(small.packs) > 1
    assert [e.seq for p in small.packs for e in decode(p.value())] == [1, 2, 3, 4, 5]
    assert PACK_EVENTS <= MAX_BATCH


def test_what_is_not_json_goes_alone_and_the_cameras_later_messages_after_it() -> None:
    packer = Packer(10_000)
    first = packer.add(b"cam-1", json.dumps(ev("cam-1", 1)).encode(), 1)
    odd = packer.add(b"cam-1", b"\x91\x80", 1)
    later = packer.add(b"cam-1", json.dumps(ev("cam-1", 2)).encode(), 1)
    assert packer.packs == [first, odd, later] and odd.value() == b"\x91\x80"


def _messages(rng: random.Random) -> list[tuple[str, bytes]]:
    """Interleaved cameras' edge batches (arrays, single events, blanks), with resends and an event twice in a batch."""
    per_camera = {c: [ev(c, seq, NOW - rng.randint(0, 3 * HOUR), rng.choice(["track.start", "line.cross", "track.end"]))
                      for seq in range(1, 400)] for c in ("cam-1", "cam-2", "cam-3")}
    queues: dict[str, list[bytes]] = {}
    for camera, evs in per_camera.items():
        at, out = 0, []
        while at < len(evs):
            batch = evs[at:at + rng.randint(1, 60)]
            if rng.random() < 0.2:
                batch = [*batch, batch[rng.randrange(len(batch))]]
            out.append(json.dumps(batch[0] if len(batch) == 1 else batch, indent=rng.choice([None, 1])).encode())
            back = rng.randint(0, at)
            if rng.random() < 0.3:  # a resend of what went before
                out.append(json.dumps(evs[back:back + rng.randint(1, 30)] or evs[:1]).encode())
            at += len(batch)
        queues[camera] = out
    messages = []
    while any(queues.values()):
        camera = rng.choice([c for c, q in queues.items() if q])
        messages.append((camera, queues[camera].pop(0)))
    return messages


def _folded(records: list[Incoming]) -> tuple[dict, dict]:
    agg, status = MinuteAggregator(24 * HOUR), FleetStatus(AlertConfig(), clock=lambda: NOW)
    state: dict = {}
    cameras: dict = {}
    latest: dict = {}
    for start in range(0, len(records), 9):
        result = agg.process(records[start:start + 9], state)
        latest.update({key: row.values for key, row in result.rows.items()})
        status.observe(cameras, result.events, result.late)
    return latest, cameras


def test_packed_records_fold_to_the_same_rows_and_camera_state_as_one_record_per_message() -> None:
    """The worker reads a packed record as the messages in it one after another: exactness untouched."""
    rng = random.Random(371)
    messages = _messages(rng)
    b = bridge()
    unpacked: list[Incoming] = []
    packed: list[Incoming] = []
    at = 0
    while at < len(messages):  # chunks as a lane's inbox gives them, of any size
        chunk = messages[at:at + rng.randint(1, 40)]
        outcomes = handled(b, chunk)
        unpacked += [Incoming(0, NOW, r.value) for o in outcomes for r in o.records if r.events]
        _, order = b.ship(outcomes)
        packed += [Incoming(0, NOW, s.record.value) for s in order if s.record.events]
        at += len(chunk)
    assert len(packed) < len(unpacked) / 3
    events = [(e.camera_id, e.seq) for r in unpacked for e in decode_validated(r.value)]
    assert [(e.camera_id, e.seq) for r in packed for e in decode_validated(r.value)] != events  # the order across cameras moved...
    for camera in ("cam-1", "cam-2", "cam-3"):  # ...and each camera's did not
        seqs = [e.seq for r in packed for e in decode_validated(r.value) if e.camera_id == camera]
        assert seqs == [s for c, s in events if c == camera]
    rows, cameras = _folded(unpacked)
    packed_rows, packed_cameras = _folded(packed)
    assert packed_cameras == cameras and packed_rows.keys() == rows.keys()
    for key, values in rows.items():
        for column, value in values.items():
            if isinstance(value, float):  # an hour's floats are added in another order: the last bit may differ
                assert abs(packed_rows[key][column] - value) <= 1e-9 * abs(value), (key, column)
            else:
                assert packed_rows[key][column] == value, (key, column)


async def test_a_packed_record_kafka_refused_is_sent_again_once_for_all_its_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each message of a pack waits on the same shipment: the first to see the refusal sends it again, the next finds it sent."""
    b = bridge()
    outcomes = handled(b, [("cam-1", json.dumps(ev("cam-1", 1)).encode()), ("cam-1", json.dumps(ev("cam-1", 2)).encode())])
    theirs, [shipment] = b.ship(outcomes)
    assert theirs == [[shipment], [shipment]]
    refused: asyncio.Future = asyncio.get_running_loop().create_future()
    refused.set_exception(NotEnoughReplicasError())
    shipment.future = refused
    sent: list[bytes] = []

    async def send(record: Record) -> asyncio.Future:  # Kafka takes it the second time
        sent.append(record.value)
        taken: asyncio.Future = asyncio.get_running_loop().create_future()
        taken.set_result(None)
        return taken

    monkeypatch.setattr(b, "send", send)
    monkeypatch.setattr("streams.bridge.delays", lambda first, most: iter([0.0] * 10))
    for mine in theirs:  # as the lane confirms its messages, in order
        await b.confirmed(mine)
    assert sent == [shipment.record.value]
