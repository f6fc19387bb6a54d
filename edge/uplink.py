"""Sends a camera's outbox to the broker and trims it by the cloud's watermark.

A broker PUBACK is not a confirmation (a broker can die with the message in
memory); only the bridge's retained ack watermark is. So the uplink sends in
seq order, at most ``window`` events beyond the watermark, and goes back to
the watermark (go-back-N) once after any reconnect, and while the link
stands only when the watermark has not moved for a while with events
outstanding: ``resend_after_s`` at first, doubling with each resend that
brought no progress, up to ``resend_max_s`` (:class:`ResendTimer`). Resends
make duplicates; the cloud drops them by (camera, seq).

Why the backoff: a fixed 10 s timer turned a slow cloud into a stopped one.
With the bridge behind on an overloaded box, every camera resent its whole
unconfirmed tail every 10 s (2,039 times in one run), which fed the bridge
the same backlog again and the workers batches of 99 % duplicates; nothing
was confirmed for 19 minutes (issue 35). What is in flight on a standing
connection is not lost (QoS 1 with the broker), only slow.

The ack watermark carries the bridge's clock: an ack for the last seq of a
message sent at local time ``s`` and received at ``r`` was written between
the two, so this node's clock is off by ``(s + r) / 2 - ack.ts`` give or take
``(r - s) / 2`` (the NTP idea, with the bridge as the server). Health
reports carry the tightest recent estimate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from edge.outbox import Outbox
from runtime.mqtt import make_client
from runtime.settings import MqttSettings
from schemas.codec import EventError, WireFormat, decode_ack, encode, encode_ack

log = logging.getLogger("fleetsight.uplink")


class ResendTimer:
    """When a camera goes back to its watermark on a standing link: after a silence that doubles each time."""

    def __init__(self, first_s: float, max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.first_s = first_s
        self.max_s = max(first_s, max_s)
        self.wait_s = first_s
        self._clock = clock
        self._since = clock()

    def progress(self) -> None:
        """The watermark moved: the next silence is judged from now, at the first interval."""
        self._since = self._clock()
        self.wait_s = self.first_s

    def restart(self) -> None:
        """Sending starts with nothing outstanding: the silence is counted from now."""
        self._since = self._clock()

    def due(self) -> bool:
        """Has the watermark stood still for the current interval?"""
        return self._clock() - self._since > self.wait_s

    def resent(self) -> None:
        """A resend went: the next one only after twice the silence (capped)."""
        self._since = self._clock()
        self.wait_s = min(self.wait_s * 2, self.max_s)


@dataclass
class UplinkStats:
    connected: bool = False
    watermark: int = 0
    messages_sent: int = 0
    events_sent: int = 0
    bytes_sent: int = 0
    resends: int = 0


class Uplink:
    """One camera's link to the cloud; runs inside an asyncio loop."""

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        *,
        wire_format: WireFormat = "json",
        batch_max: int = 100,
        window: int = 5000,
        resend_after_s: float = 10.0,
        resend_max_s: float = 160.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.camera_id = outbox.camera_id
        self.topics = settings.mqtt_topics
        self.wire_format = wire_format
        self.batch_max = batch_max
        self.window = window
        self.resend = ResendTimer(resend_after_s, resend_max_s)
        self.stats = UplinkStats()
        self._username = username
        self._password = password
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._cursor: int | None = None  # next seq to send; None = start at the head
        self._head_published: int | None = None
        self._dropped_seen = outbox.dropped
        self._closing = False
        # Other topics the camera follows (model rollout), and the latest
        # state it keeps retained on the broker; both survive reconnects.
        self._handlers: dict[str, Callable[[str, bytes], None]] = {}
        self._retained: dict[str, bytes] = {}
        self._sent_at: dict[int, float] = {}  # last seq of a message sent once -> wall time it went
        self._clock: deque[tuple[float, float]] = deque(maxlen=30)  # (offset, error) samples, seconds

    # --- paho thread ----------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("%s: MQTT connection refused: %s", self.camera_id, reason_code)
            return
        client.subscribe([(self.topics.ack(self.camera_id), 1)] + [(t, 1) for t in list(self._handlers)])
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._connected, True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._connected, False)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        handler = self._handlers.get(msg.topic)
        if handler is not None:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(handler, msg.topic, bytes(msg.payload))
            return
        if msg.topic != self.topics.ack(self.camera_id):
            return  # retained messages still in flight for a topic just unsubscribed
        received = time.time()
        try:
            ack = decode_ack(bytes(msg.payload))
        except EventError as exc:
            log.warning("%s: ignoring bad ack message: %s", self.camera_id, exc.detail)
            return
        if ack.camera_id == self.camera_id:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._on_ack, ack.seq, ack.ts, received)

    # --- asyncio loop -----------------------------------------------------------

    def _connected(self, up: bool) -> None:
        self.stats.connected = up
        if up:
            log.info("%s: link up; resending from seq %d", self.camera_id, self.outbox.head())
            for topic, payload in self._retained.items():
                self._client.publish(topic, payload, qos=1, retain=True)  # type: ignore[union-attr]
            self._cursor = None  # go back: anything in flight may be lost
            self._head_published = None
            self._sent_at.clear()  # a resent seq's send time is ambiguous
        elif not self._closing:
            log.warning("%s: link down; events wait in the outbox", self.camera_id)
        self._wake.set()

    def _on_ack(self, seq: int, bridge_ms: int = 0, received: float | None = None) -> None:
        sent = self._sent_at.pop(seq, None)
        if sent is not None and bridge_ms and received is not None and received >= sent:
            self._clock.append(((sent + received) / 2 - bridge_ms / 1000, (received - sent) / 2))
        for old in [s for s in self._sent_at if s < seq]:
            del self._sent_at[old]
        last = self.outbox.last_seq()
        if seq > last:
            moved = self.outbox.renumber_after(seq)
            log.warning(
                "%s: the cloud confirmed seq %d but this outbox only reached %d (a lost or replaced outbox file?); "
                "renumbered %d waiting events after it so none is taken for a duplicate",
                self.camera_id, seq, last, moved,
            )
            self._cursor = None
        if seq > self.stats.watermark:
            self.stats.watermark = seq
            self.resend.progress()
        self.outbox.confirm(seq)
        self._progress.set()
        self._wake.set()

    def clock_estimate(self) -> tuple[float, float] | None:
        """This node's clock minus the bridge's and its error bound (seconds), from the tightest recent ack; None before one."""
        samples = list(self._clock)  # a copy: the video thread asks, the event loop appends
        return min(samples, key=lambda s: s[1]) if samples else None

    def publish_snapshot(self, jpeg: bytes) -> None:
        """Best effort (QoS 0, retained): the latest picture, not a record."""
        if self._client is not None and self.stats.connected:
            self._client.publish(self.topics.snapshot(self.camera_id), jpeg, qos=0, retain=True)

    def subscribe(self, topic: str, handler: Callable[[str, bytes], None]) -> None:
        """Call ``handler(topic, payload)`` on the event loop for messages on ``topic``."""
        self._handlers[topic] = handler
        if self._client is not None:
            # Also when it looks down: the connect callback may have read the
            # topic list just before this one was added (twice is harmless).
            self._client.subscribe(topic, qos=1)

    def unsubscribe(self, topic: str) -> None:
        if self._handlers.pop(topic, None) is not None and self._client is not None:
            self._client.unsubscribe(topic)

    def retain(self, topic: str, payload: bytes) -> None:
        """Keep ``payload`` as the retained state on ``topic`` (sent now or on reconnect)."""
        self._retained[topic] = payload
        if self._client is not None and self.stats.connected:
            self._client.publish(topic, payload, qos=1, retain=True)

    def notify(self) -> None:
        """New events are in the outbox."""
        self._wake.set()

    def _publish_head(self) -> None:
        head = self.outbox.head()
        if head == self._head_published and self.outbox.dropped == self._dropped_seen:
            return
        assert self._client is not None
        # Retained: tells the bridge that seqs below the head are settled
        # (confirmed, or dropped by a full outbox) and need not be waited for.
        self._client.publish(self.topics.outbox(self.camera_id), encode_ack(self.camera_id, head), qos=1, retain=True)
        self._head_published = head
        self._dropped_seen = self.outbox.dropped

    def _send_some(self) -> None:
        assert self._client is not None
        head = self.outbox.head()
        if self.outbox.dropped != self._dropped_seen:
            self._publish_head()
        if self._cursor is None or self._cursor < head:
            self._cursor = head
        outstanding = self._cursor - head
        if outstanding > 0 and self.resend.due():
            log.warning("%s: no confirmation for %.0f s; resending from seq %d (the next resend waits %.0f s)",
                        self.camera_id, self.resend.wait_s, head, min(self.resend.wait_s * 2, self.resend.max_s))
            self.stats.resends += 1
            self._sent_at.clear()
            self._cursor = head
            outstanding = 0
            self.resend.resent()
        while outstanding < self.window:
            events = self.outbox.read(self._cursor, min(self.batch_max, self.window - outstanding))
            if not events:
                break
            if outstanding == 0:
                self.resend.restart()
            payload = encode(events, self.wire_format)
            self._client.publish(self.topics.events(self.camera_id), payload, qos=1)
            if len(self._sent_at) < 1000:
                self._sent_at[events[-1].seq] = time.time()
            self._cursor = events[-1].seq + 1
            outstanding = self._cursor - head
            self.stats.messages_sent += 1
            self.stats.events_sent += len(events)
            self.stats.bytes_sent += len(payload)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the outbox flowing until ``stop`` is set."""
        self._loop = asyncio.get_running_loop()
        client = make_client(
            self.settings, f"{self.settings.mqtt_topic_root}-edge-{self.camera_id}", persistent=False,
            username=self._username, password=self._password,
        )
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(self.settings.mqtt.host, self.settings.mqtt.port, keepalive=15)
        client.loop_start()
        try:
            while not stop.is_set():
                try:
                    # The timeout drives the resend timer when nothing else happens.
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                self._wake.clear()
                if self.stats.connected:
                    if self._head_published is None:
                        self._publish_head()
                    self._send_some()
        finally:
            self._closing = True
            client.disconnect()
            client.loop_stop()

    async def drained(self, timeout: float) -> bool:
        """Wait until the cloud has confirmed everything in the outbox."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth() > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), timeout=remaining)
            except TimeoutError:
                return self.outbox.depth() == 0
        return True
