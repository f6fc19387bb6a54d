"""MQTT -> Kafka bridge with confirmed delivery.

For each MQTT message, in arrival order: validate it against the contract,
bind it to the camera whose topic it came on, write the events (or a
dead-letter record saying why not) to Kafka with an idempotent ``acks=all``
producer, and only when Kafka has acknowledged every record of the message,
acknowledge it to the broker (manual QoS 1 ack on a persistent session).
A crash at any point leaves the message unacknowledged, and the broker hands
it over again. Per camera the bridge then publishes the ack watermark, a
retained message the edge uses to trim its outbox.

Bridges share the cameras by shard (``schemas.topics``): a shard's messages
travel on one MQTT session of its own (a *lane*) under a client id fixed by
the shard, so whichever bridge Kafka's consumer group gives the shard to
(``streams.shards``) resumes that session and the messages queued in it. A
bridge that gives a shard up finishes what Kafka is writing for it, acks
that, and disconnects before the group hands it on; one that only thinks it
still has it (frozen, cut off) is thrown off the broker when the new owner
connects with the same client id (MQTT session takeover).

Kafka being slow, away or short of in-sync replicas is backpressure, never
an exit: a full producer buffer makes the lane wait and send again, a record
Kafka refused for a reason it recovers from is sent again, and meanwhile
every message before it is acked and its watermark published, so a backlog
shrinks message by message even on an overloaded box. (Exiting there, as
the bridge did, restarted it into the same backlog: on a busy box it
forwarded 12,000-46,000 events, hit the buffer timeout and exited again,
four times, acking nothing for 19 minutes while the cameras resent their
whole tails; issue 35.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from runtime.kafka_admin import ensure_topics
from runtime.kafka_client import client_timeouts, kafka_security, partition_health, recoverable
from runtime.mqtt import make_client
from runtime.process import run_supervised
from runtime.retry import delays
from runtime.settings import BridgeSettings
from runtime.watchdog import Watchdog
from schemas.codec import Event, EventError, Reason, decode, decode_ack, encode, encode_ack, is_json
from schemas.deadletter import DeadLetter
from schemas.topics import SHARDS, shard_of
from streams import metrics as stream_metrics
from streams.acks import AckTracker
from streams.packing import Packer
from streams.partitioning import partition_for
from streams.shards import LaneId, hold_shards, lane_name

log = logging.getLogger("fleetsight.bridge")

# How long a lane waits on Kafka's acknowledgement before it asks Kafka
# whether it is well (a partition without a leader, too few in-sync copies,
# no answer at all: a fault, so waiting on; all well: the watchdog judges).
ACK_CHECK_S = 5.0
FAULT_LOG_EVERY_S = 10.0
LEAVE_TIMEOUT_S = 5.0  # for the group leave and the producer's close on the way out
# At most this many waiting messages are handled and packed together
# (``streams.packing``): enough for several of each camera of a lane after an outage.
PACK_MESSAGES = 250


@dataclass
class Record:
    """One Kafka record to write for an MQTT message (the bridge may pack a camera's into one, ``streams.packing``)."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    events: int = 0  # the events it holds (of the events topic; 0: a dead letter)


@dataclass
class Shipment:
    """A record on its way to Kafka, shared by the messages whose events it holds (``streams.packing``).

    A resend replaces ``future`` for all of them, so a packed record that
    Kafka refused is written again once, not once per message.
    """

    record: Record
    future: asyncio.Future | None = None

    def refused(self) -> BaseException | None:
        """Why Kafka refused the record as last sent; None while it waits, or once Kafka has it."""
        if self.future is None or not self.future.done():
            return None
        return self.future.exception()


@dataclass
class Outcome:
    """What one MQTT message turns into."""

    records: list[Record] = field(default_factory=list)
    confirms: list[tuple[str, int]] = field(default_factory=list)  # (camera, seq) once in Kafka
    floors: list[tuple[str, int]] = field(default_factory=list)  # watermark floors learned
    forwarded: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)  # of the rejections


@dataclass
class _Pending:
    received: float
    generation: int
    mid: int
    qos: int
    shipments: list[Shipment]
    outcome: Outcome


class Lane:
    """One shard's MQTT session and the messages in flight on it.

    The client id is the shard's, not the process's, and the session is
    persistent: what the broker queued for the shard while no bridge had it
    comes to the next one that connects.
    """

    def __init__(self, bridge: Bridge, lane: LaneId) -> None:
        self.bridge = bridge
        self.lane = lane
        settings = bridge.settings
        root = settings.mqtt_topic_root
        # The legacy lane keeps the id the single bridge had before shards,
        # so its session (and what was queued in it) carries over.
        self.client_id = f"{root}-bridge" if lane is None else f"{root}-bridge-{lane}"
        self.acks = AckTracker()
        self.generation = 0
        self.inbox: asyncio.Queue[tuple[float, int, mqtt.MQTTMessage]] = asyncio.Queue()
        self.pending: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=10_000)
        self.in_hand = 0  # the message _forward holds (taken from the inbox, not yet pending)
        self.confirming = 0  # the message _complete waits on (taken from pending, not yet acked)
        self._acks_changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._status = bridge.mqtt_topics.bridge_status(lane)
        self.client = make_client(settings, self.client_id, persistent=True, manual_ack=True)
        self.client.will_set(self._status, b"offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.tasks: list[asyncio.Task] = []

    def backlog(self) -> int:
        return self.inbox.qsize() + self.in_hand + self.pending.qsize() + self.confirming

    def start(self) -> None:
        settings = self.bridge.settings
        self.client.connect_async(settings.mqtt.host, settings.mqtt.port, keepalive=30)
        self.client.loop_start()
        name = lane_name(self.lane)
        self.tasks = [
            asyncio.create_task(self._forward(), name=f"forward-{name}"),
            asyncio.create_task(self._complete(), name=f"complete-{name}"),
            asyncio.create_task(self._publish_acks(), name=f"acks-{name}"),
        ]
        for task in self.tasks:
            task.add_done_callback(self.bridge.lane_task_done)

    async def stop(self, drain_s: float) -> None:
        """The one way a lane stops: given up to another bridge, the bridge stopping, or the bridge failing.

        Finishes what Kafka is writing for up to ``drain_s`` (0: nothing more),
        acks that, publishes the watermarks and the retained status
        ``offline``, and disconnects; whatever is not acked comes again to the
        next owner. Never blocks the event loop (paho's ``loop_stop`` joins its
        thread, so it runs in another). A clean disconnect makes the broker
        drop the will, so the status is published here, not left to the will
        (the failure path used to disconnect without it: the lane stayed
        ``online``).
        """
        name = lane_name(self.lane)
        forward, complete, _ = self.tasks
        forward.cancel()
        if drain_s > 0 and not complete.done():
            try:
                # The end marker may wait for room in a full queue: within the same time.
                async with asyncio.timeout(drain_s):
                    await self.pending.put(None)
                    await asyncio.shield(complete)
            except TimeoutError:
                log.warning("lane %s: Kafka did not confirm within %.0f s; the broker resends the rest", name, drain_s)
            except Exception:  # noqa: BLE001 - already reported by the bridge; nothing more is acked
                pass
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.publish_acks()
        info = self.client.publish(self._status, b"offline", qos=1, retain=True)
        try:
            await asyncio.wait_for(asyncio.to_thread(info.wait_for_publish, 5), 6)
        except (TimeoutError, RuntimeError, ValueError):
            pass  # not connected: the will (an unclean end) or the next owner's "online" tells the truth
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    # --- MQTT callbacks (paho's network thread) ----------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("lane %s: MQTT connection refused: %s", lane_name(self.lane), reason_code)
            return
        client.subscribe([(f, 1) for f in self.bridge.mqtt_topics.lane_filters(self.lane)])
        client.publish(self._status, b"online", qos=1, retain=True)
        log.info("lane %s connected to MQTT as %s", lane_name(self.lane), self.client_id)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # Acks for messages of the old connection must not be sent on the new
        # one (their packet ids may be reused): the broker resends them anyway.
        self.generation += 1
        if reason_code.is_failure:
            log.warning("lane %s: MQTT disconnected (%s); unacknowledged messages will come again",
                        lane_name(self.lane), reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self.inbox.put_nowait, (time.monotonic(), self.generation, msg))

    # --- asyncio side -------------------------------------------------------

    async def _forward(self) -> None:
        watchdog = self.bridge.watchdog
        while True:
            # The message and those already waiting behind it (never a wait for
            # more): each camera's events among them go to Kafka as few records.
            chunk = [await self.inbox.get()]
            while len(chunk) < PACK_MESSAGES and not self.inbox.empty():
                chunk.append(self.inbox.get_nowait())
            self.in_hand = len(chunk)
            outcomes = [self.bridge.handle(msg.topic, bytes(msg.payload)) for _, _, msg in chunk]  # bytes already: no copy
            shipments, in_order = self.bridge.ship(outcomes)
            watchdog.busy("handing records to the Kafka producer")
            for shipment in in_order:
                shipment.future = await self.bridge.send(shipment.record)
            stream_metrics.BRIDGE_RECORDS.inc(sum(1 for shipment in in_order if shipment.record.events))
            for (received, generation, msg), outcome, theirs in zip(chunk, outcomes, shipments, strict=True):
                await self.pending.put(_Pending(received, generation, msg.mid, msg.qos, theirs, outcome))
                self.in_hand -= 1
            stream_metrics.BRIDGE_PENDING.set(self.bridge.backlog())

    async def _complete(self) -> None:
        """Acknowledge messages to the broker in arrival order, once in Kafka."""
        watchdog = self.bridge.watchdog
        while True:
            item = await self.pending.get()
            if item is None:
                return
            if item.shipments:
                watchdog.busy(f"waiting for Kafka to acknowledge {len(item.shipments)} records")
                self.confirming = 1
                await self.bridge.confirmed(item.shipments)
                self.confirming = 0
            if item.generation == self.generation and item.qos > 0:
                self.client.ack(item.mid, item.qos)
            outcome = item.outcome
            stream_metrics.BRIDGE_KAFKA_ACK.observe(time.monotonic() - item.received)
            stream_metrics.BRIDGE_MESSAGES.labels("events" if outcome.records else "control").inc()
            stream_metrics.BRIDGE_EVENTS.inc(outcome.forwarded)
            for reason in outcome.reasons:
                stream_metrics.BRIDGE_DEADLETTERS.labels(reason).inc()
            for camera_id, seq in outcome.floors:
                self.acks.raise_floor(camera_id, seq)
            for camera_id, seq in outcome.confirms:
                self.acks.confirm(camera_id, seq)
            self.bridge.forwarded += outcome.forwarded
            self.bridge.rejected += outcome.rejected
            self._acks_changed.set()
            watchdog.progress()

    async def _publish_acks(self) -> None:
        while True:
            await self._acks_changed.wait()
            self._acks_changed.clear()
            self.publish_acks()
            # Throttle: one retained message per camera per interval at most.
            await asyncio.sleep(self.bridge.settings.ack_interval_s)

    def publish_acks(self) -> None:
        topics = self.bridge.mqtt_topics
        for camera_id, seq in self.acks.take_changed().items():
            self.client.publish(topics.lane_ack(self.lane, camera_id), encode_ack(camera_id, seq), qos=1, retain=True)


class Bridge:
    """Moves events from the MQTT broker into Kafka; see the module docstring."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.mqtt_topics = settings.mqtt_topics
        self.kafka_topics = settings.kafka_topics
        self.forwarded = 0
        self.rejected = 0
        self.lanes: dict[LaneId, Lane] = {}
        self._stop = asyncio.Event()
        self._failed: asyncio.Future[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._fault_logged = float("-inf")
        # How long a wait on Kafka goes before the bridge asks Kafka how it is (and how long
        # that question may take): both well inside the stall timeout, so a fault is heard first.
        self._check_s = min(ACK_CHECK_S, settings.stall_timeout_s / 4)
        self.watchdog = Watchdog("bridge", settings.stall_timeout_s, waiting=self.backlog)

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "the bridge is not running"
        return self._producer

    def backlog(self) -> int:
        """MQTT messages received and not yet in Kafka."""
        return sum(lane.backlog() for lane in list(self.lanes.values()))

    # --- Kafka: backpressure, not failure ------------------------------------

    async def send(self, record: Record) -> asyncio.Future:
        """Hand ``record`` to the producer and return its delivery future.

        A full buffer or no metadata yet (aiokafka waits up to a request's time
        for either, then raises ``KafkaTimeoutError``) is backpressure: the lane
        waits here and tries again, holding the MQTT messages behind it unacked
        with the broker. The wait is cut into slices shorter than the stall
        timeout, each followed by a look at Kafka, so a fault is reported
        before the watchdog judges (seen: a frozen Kafka held a first send
        for its whole metadata wait, and the watchdog fired first).
        """
        while True:
            try:
                async with asyncio.timeout(self._check_s):  # no task per record, unlike wait_for: this is the hot path
                    future: asyncio.Future = await self.producer.send(
                        record.topic, record.value, key=record.key, partition=record.partition,
                    )
                return future
            except TimeoutError:
                where = [] if record.partition is None else [TopicPartition(record.topic, record.partition)]
                if (problem := await partition_health(self.producer, where, self._check_s)) is not None:
                    self.kafka_fault(f"Kafka is not taking records: {problem}", None)
            except Exception as exc:
                if not recoverable(exc):
                    raise
                self.kafka_fault(f"Kafka is not taking records ({type(exc).__name__}); waiting", exc)

    async def confirmed(self, shipments: list[Shipment]) -> None:
        """Wait until Kafka has every one of ``shipments`` (their futures are replaced as they are resent).

        A record refused for a reason Kafka recovers from is sent again after a
        backoff (the later ones of the lane wait, so the broker gets its acks in
        order); a wait with no answer asks Kafka how its partitions are, so the
        watchdog can tell a fault from a hang.
        """
        backoff = delays(0.2, 5.0)
        while True:
            futures = [s.future for s in shipments if s.future is not None]
            await asyncio.wait(futures, timeout=self._check_s)
            failed = [s for s in shipments if s.refused() is not None]
            if not failed and all(f.done() for f in futures):
                return
            if failed:
                exc = failed[0].refused()
                assert exc is not None
                if not recoverable(exc):
                    raise exc
                self.kafka_fault(f"Kafka refused {len(failed)} record(s) ({type(exc).__name__}: {exc}); sending them again", exc)
                await asyncio.sleep(next(backoff))
                for shipment in failed:
                    # Another message of the same pack may have sent it again while this one slept.
                    if shipment.refused() is not None:
                        shipment.future = await self.send(shipment.record)
            else:
                waited = {TopicPartition(s.record.topic, s.record.partition) for s in shipments
                          if s.future is not None and not s.future.done() and s.record.partition is not None}
                problem = await partition_health(self.producer, waited, self._check_s)
                if problem is not None:
                    self.kafka_fault(f"waiting for Kafka to acknowledge: {problem}", None)

    def kafka_fault(self, what: str, exc: BaseException | None) -> None:
        """Kafka reported a fault the bridge waits out: the watchdog is told it is not a hang, the log once in a while."""
        self.watchdog.fault(what)
        stream_metrics.BRIDGE_KAFKA_FAULTS.labels(type(exc).__name__ if exc is not None else "unhealthy").inc()
        now = time.monotonic()
        if now - self._fault_logged >= FAULT_LOG_EVERY_S:
            self._fault_logged = now
            log.warning("%s (%d MQTT messages wait; the cameras keep theirs in their outboxes)", what, self.backlog())

    # --- turning one message into records (pure, no I/O) -------------------

    def handle(self, topic: str, payload: bytes, now_ms: int | None = None) -> Outcome:
        """Decide what to write to Kafka for one MQTT message."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        out = Outcome()
        parsed = self.mqtt_topics.parse(topic)
        if parsed is None:
            self._reject(out, EventError(Reason.BAD_TOPIC, f"not a camera topic: {topic!r}"), payload, topic, None)
            return out
        camera_id, kind, shard = parsed
        if shard is not None and shard != shard_of(camera_id):
            # Its messages would split between two bridges and hold its watermark back.
            if kind == "events":
                error = EventError(Reason.BAD_TOPIC, f"camera {camera_id!r} belongs to shard {shard_of(camera_id)}, not {shard}")
                self._reject(out, error, payload, topic, None)
            else:
                log.warning("ignoring %s message of %s on shard %d: it belongs to shard %d", kind, camera_id, shard, shard_of(camera_id))
            return out
        if kind in ("ack", "outbox"):
            try:
                claimed, seq, _ = decode_ack(payload)
            except EventError as exc:
                log.warning("ignoring bad %s message on %s: %s", kind, topic, exc.detail)
                return out
            if claimed == camera_id:
                # The outbox head is the oldest seq the edge still holds.
                out.floors.append((camera_id, seq - 1 if kind == "outbox" else seq))
            return out
        if kind != "events":
            self._reject(out, EventError(Reason.BAD_TOPIC, f"unknown camera topic kind {kind!r}"), payload, topic, camera_id)
            return out
        try:
            results = decode(payload, self.settings.max_payload_bytes)
        except EventError as exc:
            self._reject(out, exc, payload, topic, camera_id)
            return out
        max_ts = now_ms + int(self.settings.max_clock_skew_s * 1000)
        good: list[Event] = []
        for item in results:
            if isinstance(item, EventError):
                self._reject(out, item, payload, topic, camera_id)
                continue
            if item.camera_id != camera_id:
                error = EventError(
                    Reason.CAMERA_MISMATCH,
                    f"payload camera_id {item.camera_id!r} does not match topic camera {camera_id!r}",
                    item.to_dict(),
                )
                self._reject(out, error, payload, topic, camera_id, seq=item.seq)
                continue
            if item.ts > max_ts:
                ahead = (item.ts - now_ms) / 1000
                error = EventError(
                    Reason.CLOCK_SKEW,
                    f"ts is {ahead:.0f} s ahead of the bridge clock (limit {self.settings.max_clock_skew_s:.0f} s)",
                    item.to_dict(),
                )
                self._reject(out, error, payload, topic, camera_id, seq=item.seq)
                continue
            good.append(item)
        if good:
            # One record for the message's events: they share camera, key and
            # partition. A JSON message whose every event passed goes on as it
            # came: re-encoding it was about 6 % of the bridge's time (py-spy,
            # issue 35), and the worker reads it the same (one event or an array).
            whole = len(good) == len(results) and is_json(payload)
            out.records.append(
                Record(
                    self.kafka_topics.events,
                    camera_id.encode(),
                    payload if whole else encode(good),
                    partition_for(camera_id, self.settings.kafka_partitions),
                    len(good),
                )
            )
            out.confirms.extend((camera_id, e.seq) for e in good)
            out.forwarded += len(good)
        return out

    def ship(self, outcomes: list[Outcome]) -> tuple[list[list[Shipment]], list[Shipment]]:
        """The shipments each message of a chunk waits on, and all of them in the order to send them.

        Each camera's events records are packed (``streams.packing``); a
        dead letter goes alone. Packs are sent in the order they were opened,
        so a camera's records reach its partition in the order its messages came.
        """
        packer = Packer(max_bytes=self.settings.max_payload_bytes)
        packed: dict[int, Shipment] = {}  # id(pack) -> the shipment of its record
        theirs: list[list[Shipment]] = []
        order: list[Shipment] = []
        for outcome in outcomes:
            mine: list[Shipment] = []
            for record in outcome.records:
                if not record.events or record.key is None:
                    shipment = Shipment(record)
                    order.append(shipment)
                else:
                    pack = packer.add(record.key, record.value, record.events)
                    existing = packed.get(id(pack))
                    if existing is None:
                        existing = packed[id(pack)] = Shipment(record)  # its value once the chunk is packed
                        order.append(existing)
                    shipment = existing
                mine.append(shipment)
            theirs.append(mine)
        for pack in packer.packs:
            shipment = packed[id(pack)]
            if len(pack.parts) > 1:
                first = shipment.record
                shipment.record = Record(first.topic, first.key, pack.value(), first.partition, pack.events)
        return theirs, order

    def _reject(
        self, out: Outcome, error: EventError, payload: bytes, topic: str, camera_id: str | None, seq: int | None = None
    ) -> None:
        letter = DeadLetter.from_error(error, "bridge", payload, topic, camera_id)
        log.warning("dead-letter (%s) from %s: %s", error.reason, topic, error.detail)
        key = (camera_id or letter.camera_id or "").encode() or None
        out.records.append(Record(self.kafka_topics.deadletter, key, letter.to_record()))
        out.rejected += 1
        out.reasons.append(str(error.reason))
        # A rejected event is durably recorded too: count its seq as handled,
        # or the edge would resend it forever and hold the watermark back.
        claimed_seq = seq if seq is not None else letter.seq
        if camera_id is not None and claimed_seq is not None and claimed_seq >= 1:
            out.confirms.append((camera_id, claimed_seq))

    # --- lanes, as the bridges' group deals them out -------------------------

    async def _revoke(self, lanes: set[LaneId]) -> None:
        gone = [self.lanes.pop(lane) for lane in lanes if lane in self.lanes]
        if gone:
            await asyncio.gather(*(lane.stop(self.settings.bridge_drain_timeout_s) for lane in gone))
            log.info("gave up shards %s", _names(lane.lane for lane in gone))

    async def _assign(self, lanes: set[LaneId]) -> None:
        new = [lane for lane in lanes if lane not in self.lanes]
        for lane in new:
            self.lanes[lane] = Lane(self, lane)
            self.lanes[lane].start()
        log.info("carrying shards %s", _names(self.lanes))

    def lane_task_done(self, task: asyncio.Task) -> None:
        """A lane's task ended: unless cancelled (a lane stopping), the bridge fails with it."""
        if task.cancelled() or self._failed is None or self._failed.done():
            return
        exc = task.exception()
        if exc is not None:
            self._failed.set_exception(exc)

    async def run(self) -> None:
        """Run until :meth:`stop`; raises if Kafka fails for good."""
        self._failed = asyncio.get_running_loop().create_future()
        await ensure_topics(self.settings)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            **kafka_security(self.settings),
            **client_timeouts(),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=4 * 1024 * 1024,
        )
        await self._producer.start()
        leave = asyncio.Event()
        group = asyncio.create_task(hold_shards(self.settings, self._revoke, self._assign, leave), name="shards")
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        waiters: set[asyncio.Future[Any]] = {group, stop, self._failed}
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                if future is not stop and (exc := future.exception()) is not None:
                    raise exc
            # Graceful stop: no new messages; finish what is already in Kafka,
            # then leave the group so the others take the shards at once.
            await self._revoke(set(self.lanes))
            leave.set()
            try:
                # Leaving lets the others take the shards at once; a Kafka that does not
                # answer cannot be left, and then the session timeout does it.
                await asyncio.wait_for(group, timeout=LEAVE_TIMEOUT_S)
            except TimeoutError:
                log.warning("Kafka did not answer the bridge leaving its group; its shards move when its session times out")
        finally:
            for task in (group, stop):
                task.cancel()
            # Failing: the same stop as a revoke, with nothing more to drain
            # (what Kafka has not confirmed stays unacked with the broker).
            lanes, self.lanes = list(self.lanes.values()), {}
            await asyncio.gather(*(lane.stop(0) for lane in lanes), return_exceptions=True)
            try:
                # What it still holds is not acked to the broker, so nothing is lost by not waiting.
                await asyncio.wait_for(self._producer.stop(), LEAVE_TIMEOUT_S)
            except TimeoutError:
                log.warning("Kafka did not take the producer's last records; their MQTT messages come again")
            log.info("bridge stopped: %d events forwarded, %d rejected", self.forwarded, self.rejected)

    def stop(self) -> None:
        self._stop.set()


def _names(lanes: Iterable[LaneId]) -> str:
    names = sorted(lanes, key=lambda lane: SHARDS if lane is None else lane)
    return ", ".join(lane_name(lane) for lane in names) or "none"


async def run_bridge(settings: BridgeSettings) -> int:
    """Entry point of ``fleetsight bridge``."""
    bridge = Bridge(settings)
    log.info(
        "bridge: MQTT %s:%s -> Kafka %s (topic %s)",
        settings.mqtt.host, settings.mqtt.port, settings.kafka_bootstrap, settings.kafka_topics.events,
    )
    return await run_supervised(
        bridge.run, bridge.stop, bridge.watchdog, metrics_port=settings.bridge_metrics_port,
        metrics_bind=settings.metrics_bind, log=log, on_failure="bridge failed; unacknowledged MQTT messages stay with the broker",
    )
