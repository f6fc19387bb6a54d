"""Stream processing speed on the local Kafka and PostgreSQL.

Run: .venv/bin/python -m bench.stream_throughput [--events 300000] [--latency-s 30] [--rate 200]
(starts the local services if they are not up; uses topics and a database
of its own and removes them afterwards).

1. A backlog of events in the events topic (an hour of a 32-camera fleet,
   in arrival order: what an outage leaves behind); events/s through the Faust
   aggregation (one worker, measured from its first to its last offset
   commit) divided by events/s of a bare aiokafka consumer that reads and
   JSON-decodes the same topic. For scale, also a Faust app that only
   receives the same records in the worker's batches (no decoding, no
   work): what Faust's delivery alone allows on this machine.
2. The same backlog with two workers against one.
3. Event-to-SQL latency at a steady load through the whole pipeline
   (MQTT -> bridge -> Kafka -> worker -> sink -> PostgreSQL): probe events
   stamped when published, against the ``updated_at`` of the row each one
   creates (same machine, same clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devtools.ports import free_port
from devtools.processes import spawn, stop, wait_bridge_online
from devtools.sandbox import Sandbox
from devtools.services import Services
from edge.config import MqttConfig
from fleetsight.mqtt_users import admin_settings
from runtime.kafka_admin import ensure_topics
from runtime.kafka_client import kafka_security
from runtime.kafka_offsets import log_offsets
from runtime.mqtt import make_client
from runtime.settings import BridgeSettings, Settings, load_settings
from runtime.waiting import WaitTimeout, wait_for, wait_until
from schemas.aggregates import Row, decode_rows
from schemas.codec import Event, encode
from streams.bridge import PACK_MESSAGES
from streams.packing import Packer
from streams.partitioning import partition_for

ROOT = Path(__file__).resolve().parent.parent

CAMERAS = [f"bench-{i:02d}" for i in range(32)]
WARM_S = 5.0  # the steady load runs this long before the latency probes start


def make_events(n: int) -> list[Event]:
    """An hour of a 32-camera fleet, in the order it would arrive after an outage."""
    rng = random.Random(1)
    now = int(time.time() * 1000)
    seqs = {c: 0 for c in CAMERAS}
    out = []
    for i in range(n):
        cam = rng.choice(CAMERAS)
        seqs[cam] += 1
        kind = rng.random()
        ts = now - 3600_000 + i * 3600_000 // n
        if kind < 0.5:
            data, type_ = {"track_id": seqs[cam], "class": rng.choice(["person", "car"]), "confidence": 0.8}, "track.start"
        elif kind < 0.8:
            data, type_ = {"track_id": seqs[cam], "class": "person", "line": "door", "direction": rng.choice(["in", "out"])}, "line.cross"
        else:
            data, type_ = {"track_id": seqs[cam], "class": "person", "zone": "till"}, "zone.enter"
        out.append(Event(cam, "bench", seqs[cam], ts, type_, data))
    return out


def as_records(events: list[Event], per_record: int, pack: int = PACK_MESSAGES) -> list[tuple[str, bytes]]:
    """(camera, value) of the records the bridge writes for ``events``: an
    edge's batch (one camera, consecutive seqs) per MQTT message, messages
    in arrival order, and each ``pack`` waiting messages packed per camera
    as the bridge packs them (``streams.packing``; 1: a record per message)."""
    open_: dict[str, list[Event]] = {}
    messages: list[list[Event]] = []
    for e in events:
        batch = open_.setdefault(e.camera_id, [])
        batch.append(e)
        if len(batch) == per_record:
            messages.append(open_.pop(e.camera_id))
    messages.extend(open_.values())
    out: list[tuple[str, bytes]] = []
    for start in range(0, len(messages), pack):
        packer = Packer(BridgeSettings.model_fields["max_payload_bytes"].default)
        for batch in messages[start:start + pack]:
            packer.add(batch[0].camera_id.encode(), encode(batch), len(batch))
        out += [(p.key.decode(), p.value()) for p in packer.packs]
    return out


async def produce_backlog(settings: Settings, events: list[Event], per_record: int, pack: int) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=20,
                                **kafka_security(settings))
    await producer.start()
    try:
        futures = [
            await producer.send(settings.kafka_topics.events, value, key=camera.encode(),
                                partition=partition_for(camera, settings.kafka_partitions))
            for camera, value in as_records(events, per_record, pack)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def bare_consumer(settings: Settings, n: int) -> float:
    """Events/s of a plain aiokafka consumer reading and JSON-decoding the records."""
    consumer = AIOKafkaConsumer(settings.kafka_topics.events, bootstrap_servers=settings.kafka_bootstrap, **kafka_security(settings),
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=f"bare-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    seen = 0
    first = None
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for messages in batches.values():
                if first is None and messages:
                    first = time.perf_counter()
                for m in messages:
                    seen += len(json.loads(m.value))
        return (n - 1) / (time.perf_counter() - first)
    finally:
        await consumer.stop()


async def committed(settings: Settings, group: str) -> int:
    """Records (not events) the group has committed on the events topic."""
    async with log_offsets(settings) as log:
        return sum((await log.committed(group, settings.kafka_topics.events)).values())


def faust_alone(topic: str, bootstrap: str, records: int) -> None:
    """Run in a child process: a Faust app that takes the topic's records in the worker's batches and nothing more."""
    import faust

    from streams.worker import BATCH_MAX, BATCH_WITHIN_S, FETCH_BYTES, STREAM_BUFFER

    # datadir in a temporary folder: by default Faust leaves one in the working directory.
    # Named after the sandbox (its topic prefix): its own topic goes with it.
    app = faust.App(f"{topic.split('.', 1)[0]}-alone", broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
                    datadir=tempfile.mkdtemp(prefix="faust-alone-"), consumer_auto_offset_reset="earliest", consumer_max_fetch_size=FETCH_BYTES, stream_buffer_maxsize=STREAM_BUFFER)
    seen = {"n": 0, "first": 0.0, "first_n": 0, "batches": 0}

    @app.agent(app.topic(topic, key_serializer="raw", value_serializer="raw", acks=False), concurrency=1)
    async def take(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):  # type: ignore[attr-defined]
            if not seen["first"]:  # timed from the first batch's arrival: its records are not counted
                seen["first"], seen["first_n"] = time.perf_counter(), len(batch)
            seen["n"] += len(batch)
            seen["batches"] += 1
            if seen["n"] >= records:
                print(f"RECORDS/S {(seen['n'] - seen['first_n']) / (time.perf_counter() - seen['first']):.1f} "
                      f"BATCHES {seen['batches']}", flush=True)
                os._exit(0)

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def faust_alone_rate(settings: Settings, records: int, per_record: float) -> float:
    """Events/s of :func:`faust_alone` on the events topic (from its first batch to its last)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.stream_throughput", "--faust-alone", settings.kafka_topics.events, settings.kafka_bootstrap, str(records)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    line = next((x for x in out.stdout.splitlines() + out.stderr.splitlines() if "RECORDS/S" in x), None)
    if line is None:
        raise RuntimeError(f"the Faust-alone run printed no rate: {out.stderr[-2000:]}")
    rate, batches = line.split("RECORDS/S")[1].split()[0], line.split("BATCHES")[1].split()[0]
    # Timed from its first batch: with fewer after it, the figure is noise (records of 500 fill a batch of 1,000 with half the backlog).
    return float(rate) * per_record if int(batches) >= 4 else float("nan")


def stage_seconds(port: int) -> dict[str, float]:
    """The worker's ``fleetsight_worker_stage_seconds`` per stage, read from its metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("fleetsight_worker_stage_seconds_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('stage="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def sharing(log: Path, partitions: int, workers: int) -> bool:
    """Whether the worker writing ``log`` was last positioned on its share of the partitions (all of them, alone)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if "positioned " in line] if log.exists() else []
    if not lines:
        return False
    held = lines[-1].split("positioned ", 1)[1].split(" at the offsets", 1)[0].count("@")
    return held <= -(-partitions // workers)


def faust_rate(
    settings: Settings, n: int, workers: int, logs: Path, per_record: float, stages: dict[str, float] | None = None,
    produce: Callable[[Settings], None] | None = None,
) -> float:
    """Events/s from the first offset commit to the last, with ``workers`` workers
    (``n`` records of ``per_record`` events on average); ``stages`` gets the
    first worker's time per stage.

    With ``produce``, the workers start on empty topics of their own, and
    the backlog is written there once every worker holds its share of the
    partitions; the rate is timed from the first commit after it is all
    written. Timed from the start instead, a second worker joining stopped
    both for the rebalance (seconds, of a run of a few): the group's start-up,
    not its speed (two workers measured 0.01-2.2x one).
    """
    port = free_port()
    app = settings.model_copy(update={"stream_app_id": f"{settings.stream_app_id}-{workers}w", "worker_metrics_port": port})
    if produce is not None:
        app = app.model_copy(update={"kafka_topic_prefix": f"{settings.kafka_topic_prefix}-{workers}w"})
    paths = [logs / f"worker-{workers}-{i}.log" for i in range(workers)]
    procs = [spawn("worker", app, paths[0])]
    procs += [spawn("worker", app.model_copy(update={"worker_metrics_port": None}), path) for path in paths[1:]]
    try:
        written = 0.0
        if produce is not None:
            try:
                wait_until(lambda: all(sharing(path, settings.kafka_partitions, workers) for path in paths), 180,
                           f"{workers} workers sharing the partitions")
            except WaitTimeout:
                raise RuntimeError(f"the workers did not share the partitions; logs in {logs}") from None
            produce(app)
            written = time.monotonic()
        samples: list[tuple[float, int]] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = asyncio.run(committed(app, app.stream_app_id))
            samples.append((time.monotonic(), done))
            if done >= n:
                break
            time.sleep(0.25)  # sampling period of the committed offsets
        start = next(((t, c) for t, c in samples if c > 0 and t >= written), None)
        end = next((t, c) for t, c in samples if c >= n)
        if start is None or end[0] <= start[0]:
            raise RuntimeError("the backlog was done within one commit interval: use more --events")
        if stages is not None:
            stages.update(stage_seconds(port))
        return (end[1] - start[1]) * per_record / (end[0] - start[0])
    finally:
        stop(procs)


@dataclass(frozen=True)
class Probe:
    """One probe event's way through the pipeline: when it was published, and when each hop had it (s)."""

    published: float
    in_kafka: float | None  # the events topic's record (the bridge's send)
    in_rows: float | None  # the rows topic's record (the worker's send)
    in_sql: float  # the row's updated_at (the sink's transaction)

    @property
    def ms(self) -> float:
        return (self.in_sql - self.published) * 1000

    def hops(self) -> str:
        """Milliseconds spent in the bridge, the worker and the sink."""
        if self.in_kafka is None or self.in_rows is None:
            return "hops unknown (not found in Kafka)"
        bridge, worker, sink = self.in_kafka - self.published, self.in_rows - self.in_kafka, self.in_sql - self.in_rows
        return f"bridge {bridge * 1000:.0f}, worker {worker * 1000:.0f}, sink {sink * 1000:.0f}"


async def hop_times(settings: Settings) -> tuple[dict[str, float], dict[str, float]]:
    """When each probe reached the events topic and the rows topic (record timestamps, s), by its class."""
    topics = settings.kafka_topics
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **kafka_security(settings),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        found: dict[str, dict[str, float]] = {topics.events: {}, topics.rows: {}}
        for topic, seen in found.items():
            tps = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]  # both topics have as many
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for messages in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                    for m in messages:
                        if b'"probe-' not in m.value:
                            continue
                        items = decode_rows(m.value) if topic == topics.rows else [json.loads(m.value)]
                        for item in items:
                            cls = item.values.get("object_class") if isinstance(item, Row) else item["data"].get("class")
                            if isinstance(cls, str) and cls.startswith("probe-"):
                                seen.setdefault(cls, m.timestamp / 1000)
        return found[topics.events], found[topics.rows]
    finally:
        await consumer.stop()


async def latency(settings: Settings, seconds: float, rate: float, logs: Path) -> list[Probe]:
    """Each probe's way from publish to its row in SQL, fastest first."""
    procs = [spawn(c, settings, logs / f"{c}-latency.log") for c in ("bridge", "worker", "sink")]
    try:
        assert await asyncio.to_thread(wait_bridge_online, settings, 60)
        # The admin login may publish for every camera (cameras may only speak for themselves).
        client = make_client(admin_settings(settings), f"bench-{uuid.uuid4().hex[:6]}", persistent=False)
        client.connect(settings.mqtt.host, settings.mqtt.port)
        client.loop_start()
        topics = settings.mqtt_topics
        sent: dict[str, float] = {}
        seq = {c: 0 for c in CAMERAS + ["probe"]}

        def send(camera: str, cls: str) -> float:
            seq[camera] += 1
            ts = int(time.time() * 1000)
            body = {"v": 1, "camera_id": camera, "site": "bench", "seq": seq[camera], "ts": ts, "type": "track.start",
                    "data": {"track_id": seq[camera], "class": cls, "confidence": 0.8}}
            client.publish(topics.events(camera), json.dumps(body), qos=1)
            return time.time()

        # Warm up until the pipeline answers, then measure at a steady rate.
        send("probe", "warmup")
        conn = await asyncpg.connect(settings.postgres_dsn)
        warm = "SELECT count(*) FROM camera_minute_counts WHERE object_class = 'warmup'"
        try:
            await wait_for(lambda: conn.fetchval(warm), 120, "the worker's first assignment")
        except WaitTimeout:
            raise RuntimeError(f"the pipeline did not answer; logs in {logs}") from None
        # Probes only once the load has run WARM_S: the pipeline's first
        # seconds under it (the sink's first statements for each table and
        # cameras new to the worker's state) held the first probes 1.1-1.6 s.
        started = time.monotonic()
        k = 0
        while time.monotonic() - started < seconds + WARM_S:
            for _ in range(max(1, int(rate / 10))):
                send(random.choice(CAMERAS), "person")
            if k % 5 == 0 and time.monotonic() - started >= WARM_S:
                sent[f"probe-{k}"] = send("probe", f"probe-{k}")
            k += 1
            await asyncio.sleep(0.1)  # the load's pace: rate/10 events every 100 ms
        probes = "SELECT object_class, extract(epoch FROM updated_at) AS at FROM camera_minute_counts WHERE camera_id = 'probe' AND object_class LIKE 'probe-%'"

        async def all_probes() -> bool:
            return len(await conn.fetch(probes)) >= len(sent)

        try:
            await wait_for(all_probes, 60, "every probe's row", interval=0.5)
        except WaitTimeout:
            pass  # the latencies of those that arrived
        rows = await conn.fetch(probes)
        await conn.close()
        client.loop_stop()
        in_kafka, in_rows = await hop_times(settings)
        found = [
            Probe(sent[cls], in_kafka.get(cls), in_rows.get(cls), float(r["at"]))
            for r in rows if (cls := r["object_class"])
        ]
        return sorted(found, key=lambda p: p.ms)
    finally:
        stop(procs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--per-record", type=int, default=MqttConfig().batch_max,
                        help="events per MQTT message: an edge's batch (mqtt.batch_max, default 100)")
    parser.add_argument("--pack", type=int, default=PACK_MESSAGES,
                        help="waiting messages the bridge packs into a record per camera (its chunk); 1: a record per message")
    parser.add_argument("--latency-s", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s of background load in part 3")
    parser.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 3 for the latency alone")
    parser.add_argument("--faust-alone", nargs=3, metavar=("TOPIC", "BOOTSTRAP", "RECORDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.faust_alone:
        topic, bootstrap, records = args.faust_alone
        faust_alone(topic, bootstrap, int(records))
        return

    base = load_settings()
    Services(base).up()
    asyncio.run(run(Sandbox(base, prefix="bench"), args))


def run_all(settings: Settings, args: argparse.Namespace) -> None:
    logs = Path(tempfile.mkdtemp(prefix="fleetsight-bench-"))
    parts = {int(p) for p in args.parts.split(",")}
    if parts & {1, 2}:
        throughput(settings, args, logs, parts)
    if 3 in parts:
        latencies(settings, args, logs)


def throughput(settings: Settings, args: argparse.Namespace, logs: Path, parts: set[int]) -> None:
    """Parts 1 and 2: a backlog through one worker against a bare consumer, and through two workers."""
    events = make_events(args.events)
    records = len(as_records(events, args.per_record, args.pack))
    per_record = len(events) / records
    asyncio.run(produce_backlog(settings, events, args.per_record, args.pack))
    # The bare consumer before and after the worker, and the faster of the two
    # taken: this box's neighbours slow it by up to half from one minute to
    # the next, and a slow bare run flattered the worker (0.41 once).
    before = asyncio.run(bare_consumer(settings, len(events)))
    alone = faust_alone_rate(settings, records, per_record)
    stages: dict[str, float] = {}
    one = faust_rate(settings, records, 1, logs, per_record, stages)
    after = asyncio.run(bare_consumer(settings, len(events)))
    bare = max(before, after)
    print(f"1. {len(events)} events in a backlog, {records} records ({per_record:.1f} events each), {settings.kafka_partitions} partitions")
    print(f"   bare aiokafka consumer (read + JSON decode): {bare:9.0f} events/s  (the faster of {before:.0f} before, {after:.0f} after)")
    if not math.isnan(alone):
        print(f"   Faust delivering the records, nothing else: {alone:9.0f} events/s  ({alone / bare:.3f} of bare)")
    else:
        print("   Faust delivering the records, nothing else: too few batches to time (give --events more)")
    print(f"   Faust aggregation, one worker:              {one:9.0f} events/s")
    print(f"   ratio: {one / bare:.3f}" + (f"  (against Faust alone: {one / alone:.3f})" if not math.isnan(alone) else ""))
    print("   where the worker's time went, us an event: " + ", ".join(
        f"{stage} {seconds / len(events) * 1e6:.2f}" for stage, seconds in stages.items()))
    if 2 not in parts:
        return
    two = faust_rate(settings, records, 2, logs, per_record,
                     produce=lambda topics: asyncio.run(produce_backlog(topics, events, args.per_record, args.pack)))
    print(f"2. two workers: {two:.0f} events/s, against one: {one:.0f} events/s; ratio {two / one:.2f}")


def latencies(settings: Settings, args: argparse.Namespace, logs: Path) -> None:
    """Part 3: event-to-SQL latency through the whole pipeline, with where the slowest probes waited."""
    probes = asyncio.run(latency(settings, args.latency_s, args.rate, logs))
    lat = [p.ms for p in probes]
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"3. event-to-SQL latency at {args.rate:.0f} events/s for {args.latency_s:.0f} s, {len(lat)} probes:")
    print(f"   p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {lat[-1]:.0f} ms")
    # When the slowest went, to find in the logs (kept in this folder) what held them.
    print(f"   the median probe: {probes[len(probes) // 2].hops()}")
    for p in probes[-3:]:
        at = p.published
        print(f"   slow: {p.ms:.0f} ms at {time.strftime('%H:%M:%S', time.localtime(at))}.{int(at % 1 * 1000):03d} ({p.hops()})")
    print(f"   logs in {logs}")


async def run(box: Sandbox, args: argparse.Namespace) -> None:
    """Every part, in a sandbox of its own (removed afterwards); each part runs its own event loop, so in a thread."""
    async with box:
        await asyncio.to_thread(run_all, box.settings, args)


if __name__ == "__main__":
    main()
