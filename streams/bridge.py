"""MQTT -> Kafka bridge with confirmed delivery.

For each MQTT message, in arrival order: validate it against the contract,
bind it to the camera whose topic it came on, write the events (or a
dead-letter record saying why not) to Kafka with an idempotent ``acks=all``
producer, and only when Kafka has acknowledged every record of the message,
acknowledge it to the broker (manual QoS 1 ack on a persistent session).
A crash at any point leaves the message unacknowledged, and the broker hands
it over again. Per camera the bridge then publishes the ack watermark, a
retained message the edge uses to trim its outbox.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaProducer

from runtime import metrics
from runtime.kafka_admin import ensure_topics
from runtime.mqtt import make_client
from runtime.settings import BridgeSettings
from runtime.watchdog import Watchdog
from schemas.codec import Event, EventError, Reason, decode, decode_ack, encode, encode_ack
from schemas.deadletter import DeadLetter
from streams import metrics as stream_metrics
from streams.acks import AckTracker
from streams.partitioning import partition_for

log = logging.getLogger("fleetsight.bridge")


@dataclass
class Record:
    """One Kafka record to write for an MQTT message."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


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
    futures: list[asyncio.Future]
    outcome: Outcome


class Bridge:
    """Moves events from the MQTT broker into Kafka; see the module docstring."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.mqtt_topics = settings.mqtt_topics
        self.kafka_topics = settings.kafka_topics
        self.acks = AckTracker()
        self.forwarded = 0
        self.rejected = 0
        self._generation = 0
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._inbox: asyncio.Queue[tuple[float, int, mqtt.MQTTMessage]] = asyncio.Queue()
        self._pending: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=10_000)
        self._acks_changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._producer: AIOKafkaProducer | None = None
        self._in_hand = 0  # the message _forward holds (taken from the inbox, not yet pending)
        self.watchdog = Watchdog("bridge", settings.stall_timeout_s, waiting=self.backlog)

    def backlog(self) -> int:
        """MQTT messages received and not yet in Kafka."""
        return self._inbox.qsize() + self._in_hand + self._pending.qsize()

    # --- turning one message into records (pure, no I/O) -------------------

    def handle(self, topic: str, payload: bytes, now_ms: int | None = None) -> Outcome:
        """Decide what to write to Kafka for one MQTT message."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        out = Outcome()
        parsed = self.mqtt_topics.parse(topic)
        if parsed is None:
            self._reject(out, EventError(Reason.BAD_TOPIC, f"not a camera topic: {topic!r}"), payload, topic, None)
            return out
        camera_id, kind = parsed
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
            # One record for the message's events: they share camera, key and partition.
            out.records.append(
                Record(
                    self.kafka_topics.events,
                    camera_id.encode(),
                    encode(good),
                    partition_for(camera_id, self.settings.kafka_partitions),
                )
            )
            out.confirms.extend((camera_id, e.seq) for e in good)
            out.forwarded += len(good)
        return out

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

    # --- MQTT callbacks (paho's network thread) ----------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused: %s", reason_code)
            return
        client.subscribe(
            [(self.mqtt_topics.all_outbox(), 1), (self.mqtt_topics.all_acks(), 1), (self.mqtt_topics.all_events(), 1)]
        )
        client.publish(self.mqtt_topics.bridge_status, b"online", qos=1, retain=True)
        log.info("connected to MQTT %s:%s", self.settings.mqtt.host, self.settings.mqtt.port)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._connected.set)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # Acks for messages of the old connection must not be sent on the new
        # one (their packet ids may be reused): the broker resends them anyway.
        self._generation += 1
        log.warning("MQTT disconnected (%s); unacknowledged messages will come again", reason_code)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._connected.clear)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._inbox.put_nowait, (time.monotonic(), self._generation, msg))

    # --- asyncio side -------------------------------------------------------

    async def _forward(self) -> None:
        assert self._producer is not None
        while True:
            received, generation, msg = await self._inbox.get()
            self._in_hand = 1
            outcome = self.handle(msg.topic, bytes(msg.payload))  # bytes already: no copy
            self.watchdog.busy("handing a message's records to the Kafka producer")
            futures = [
                await self._producer.send(r.topic, r.value, key=r.key, partition=r.partition) for r in outcome.records
            ]
            await self._pending.put(_Pending(received, generation, msg.mid, msg.qos, futures, outcome))
            self._in_hand = 0
            stream_metrics.BRIDGE_PENDING.set(self._pending.qsize())

    async def _complete(self) -> None:
        """Acknowledge messages to the broker in arrival order, once in Kafka."""
        assert self._client is not None
        while True:
            item = await self._pending.get()
            if item is None:
                return
            if item.futures:
                self.watchdog.busy(f"waiting for Kafka to acknowledge {len(item.futures)} records")
                await asyncio.gather(*item.futures)  # raises if Kafka refused: we stop, unacked
            if item.generation == self._generation and item.qos > 0:
                self._client.ack(item.mid, item.qos)
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
            self.forwarded += outcome.forwarded
            self.rejected += outcome.rejected
            self._acks_changed.set()
            self.watchdog.progress()

    async def _publish_acks(self) -> None:
        assert self._client is not None
        while True:
            await self._acks_changed.wait()
            self._acks_changed.clear()
            self.publish_acks()
            # Throttle: one retained message per camera per interval at most.
            await asyncio.sleep(self.settings.ack_interval_s)

    def publish_acks(self) -> None:
        assert self._client is not None
        for camera_id, seq in self.acks.take_changed().items():
            self._client.publish(self.mqtt_topics.ack(camera_id), encode_ack(camera_id, seq), qos=1, retain=True)

    async def run(self) -> None:
        """Run until :meth:`stop`; raises if Kafka fails for good."""
        self._loop = asyncio.get_running_loop()
        await ensure_topics(self.settings)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=4 * 1024 * 1024,
        )
        await self._producer.start()
        client = make_client(
            self.settings, f"{self.settings.mqtt_topic_root}-bridge", persistent=True, manual_ack=True
        )
        self._client = client
        client.will_set(self.mqtt_topics.bridge_status, b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.connect_async(self.settings.mqtt.host, self.settings.mqtt.port, keepalive=30)
        client.loop_start()
        forward = asyncio.create_task(self._forward(), name="forward")
        complete = asyncio.create_task(self._complete(), name="complete")
        publisher = asyncio.create_task(self._publish_acks(), name="acks")
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait({forward, complete, publisher, stop}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            # Graceful stop: no new messages; finish what is already in Kafka.
            forward.cancel()
            await self._pending.put(None)
            await asyncio.wait_for(complete, timeout=30)
            self.publish_acks()
            info = client.publish(self.mqtt_topics.bridge_status, b"offline", qos=1, retain=True)
            await asyncio.to_thread(info.wait_for_publish, 5)
        finally:
            for task in (forward, complete, publisher, stop):
                task.cancel()
            client.disconnect()
            client.loop_stop()
            await self._producer.stop()
            log.info("bridge stopped: %d events forwarded, %d rejected", self.forwarded, self.rejected)

    def stop(self) -> None:
        self._stop.set()


async def run_bridge(settings: BridgeSettings) -> int:
    """Entry point of ``fleetsight bridge``."""
    bridge = Bridge(settings)
    metrics.watch(bridge.watchdog)
    metrics.serve(settings.bridge_metrics_port, settings.metrics_bind)
    bridge.watchdog.start(asyncio.get_running_loop())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, bridge.stop)
    log.info(
        "bridge: MQTT %s:%s -> Kafka %s (topic %s)",
        settings.mqtt.host, settings.mqtt.port, settings.kafka_bootstrap, settings.kafka_topics.events,
    )
    try:
        await bridge.run()
    except Exception:
        log.exception("bridge failed; unacknowledged MQTT messages stay with the broker")
        return 1
    return 0
