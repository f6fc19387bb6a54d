"""Alert notifier: each alert's opening and closing, posted to the webhooks that want it.

Two halves that never wait on each other:

- **Queueing.** The notifier consumes the alerts topic (rows of the
  ``alerts`` table, key = alert id). For each record, and each webhook whose
  kinds and sites take it, one row of ``alert_deliveries`` is queued with the
  exact body every attempt will post; ``ON CONFLICT DO NOTHING`` on
  (alert, state, webhook) makes a replayed record queue nothing new. The
  Kafka offset is committed after the insert, so a crash reads the record
  again. Alerts that reach SQL without passing the topic (the sink's
  reconciler writes its own) are queued by a sweep of the ``alerts`` table,
  run only once the consumer has read the whole topic: whatever went through
  Kafka is queued by then, in topic order.
- **Posting.** One task per webhook posts its pending rows in queue order,
  one at a time, with the signature and idempotency key of
  ``schemas/webhook.py``. A receiver that fails (connection refused, a
  timeout, 408, 429, 5xx) gets the *same* delivery again after a backoff
  (``runtime.retry.delays``, doubling up to ``webhook_retry_max_s``), never a
  later one first, so it sees an alert's opening before its closing. Another
  4xx is the receiver saying no: ``rejected``, logged, and the next goes. A
  delivery failing for longer than ``webhook_give_up_s`` is ``expired``. A
  receiver that is down holds back only its own deliveries: the consumer
  goes on queueing and the other webhooks go on posting.

Delivery is at least once: an attempt whose answer is lost (the notifier
killed after the receiver took the request) is made again with the same
``Idempotency-Key``, which the receiver uses to drop the repeat.

Several notifiers may run: all consume and queue (harmlessly, by the
conflict rule); only the holder of a PostgreSQL advisory lock posts. The
lock is a session lock on a connection kept open: when its holder dies the
connection closes, and another notifier takes it at its next try.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runtime.kafka_admin import ensure_topics
from runtime.kafka_client import RECOVERABLE, client_timeouts, commit_read, consumer_timeouts, kafka_security
from runtime.kafka_offsets import fetched_lag
from runtime.process import run_supervised
from runtime.retry import delays, retry
from runtime.settings import NotifierSettings, Webhook
from runtime.waiting import wait_event
from runtime.watchdog import Watchdog
from schemas import webhook as contract
from schemas.aggregates import ALERTS, Row
from schemas.codec import Reason
from schemas.deadletter import DeadLetter
from sinks import metrics as sink_metrics
from sinks.db import make_engine

log = logging.getLogger("fleetsight.notifier")

T = TypeVar("T")
Outcome = Literal["delivered", "rejected", "retry"]

# pg_try_advisory_lock key of the notifier that posts ("FSNOTIFY" in ASCII).
POSTING_LOCK = 0x46534E4F54494659
USER_AGENT = "FleetSight-Notifier/1"


@dataclass(frozen=True)
class Delivery:
    """One alert change for one webhook, as queued in ``alert_deliveries``."""

    webhook: str
    alert_id: str
    state: str
    kind: str
    site: str
    camera_id: str
    idempotency_key: str
    body: bytes


def deliveries(alert: Mapping[str, Any], webhooks: Iterable[Webhook]) -> list[Delivery]:
    """What one ``alerts`` row (times in ms) queues: one delivery per webhook that wants it.

    A closing comes with its opening, queued first: an alert that opened and
    closed between two sweeps (a reconciler alert lasting one pass) or
    within one worker batch is only ever seen closed, and a receiver must
    still get it whole. Where the opening was queued already, the conflict
    rule keeps the one queued and adds nothing.
    """
    changes = [alert]
    if alert["state"] == "closed":
        changes.insert(0, {**alert, "state": "open", "closed_at": None})
    out = []
    for change in changes:
        body = contract.body(change)
        out += [
            Delivery(w.name, change["alert_id"], change["state"], change["kind"], change["site"], change["camera_id"],
                     contract.idempotency_key(change["alert_id"], change["state"], w.name), body)
            for w in webhooks if w.wants(change["kind"], change["site"])
        ]
    return out


def outcome(status: int) -> Outcome:
    """What an HTTP answer means for a delivery: done, refused for good, or try again later."""
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 425, 429) or status >= 500:
        return "retry"
    # 3xx is not followed (a webhook URL that moved is the operator's to fix,
    # and a redirect must not carry the signed body elsewhere): like a 4xx, final.
    return "rejected"


def _ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value is not None else None


# In the order given (delivery_id is the order each webhook gets them in): an
# alert's opening is read before its closing, so it is queued first.
_QUEUE = text("""
    INSERT INTO alert_deliveries (webhook, alert_id, state, kind, site, camera_id, idempotency_key, body)
    SELECT webhook, alert_id, state, kind, site, camera_id, key, body
    FROM unnest(CAST(:webhook AS text[]), CAST(:alert_id AS text[]), CAST(:state AS text[]), CAST(:kind AS text[]),
                CAST(:site AS text[]), CAST(:camera_id AS text[]), CAST(:key AS text[]), CAST(:body AS text[]))
         WITH ORDINALITY AS u(webhook, alert_id, state, kind, site, camera_id, key, body, n)
    ORDER BY n
    ON CONFLICT (alert_id, state, webhook) DO NOTHING
""")
# Alert rows changed in the window whose current state some webhook has not had queued.
_SWEEP = text("""
    SELECT a.alert_id, a.camera_id, a.site, a.kind, a.subject, a.state, a.opened_at, a.closed_at, a.detail
    FROM alerts a
    WHERE a.updated_at >= now() - make_interval(secs => :window) AND a.updated_at <= now() - make_interval(secs => :after)
      AND (SELECT count(*) FROM alert_deliveries d WHERE d.alert_id = a.alert_id AND d.state = a.state) < :webhooks
    ORDER BY a.updated_at
""")
_PENDING = text("""
    SELECT delivery_id, alert_id, state, idempotency_key, body, attempts, queued_at FROM alert_deliveries
    WHERE webhook = :webhook AND status = 'pending' ORDER BY delivery_id LIMIT :limit
""")
_ATTEMPTED = text("""
    UPDATE alert_deliveries SET attempts = attempts + 1, last_attempt_at = now(), status = CAST(:status AS text),
        response_status = :response_status, last_error = :error,
        delivered_at = CASE WHEN CAST(:status AS text) = 'delivered' THEN now() ELSE delivered_at END
    WHERE delivery_id = :delivery_id
""")
_COUNT_PENDING = text("SELECT webhook, count(*) AS n FROM alert_deliveries WHERE status = 'pending' GROUP BY webhook")


async def queue(engine: AsyncEngine, items: Sequence[Delivery]) -> int:
    """Queue ``items`` (one transaction); a delivery already queued stays as it is. Returns how many are new."""
    if not items:
        return 0
    async with engine.begin() as conn:
        result = await conn.execute(_QUEUE, {
            "webhook": [d.webhook for d in items], "alert_id": [d.alert_id for d in items], "state": [d.state for d in items],
            "kind": [d.kind for d in items], "site": [d.site for d in items], "camera_id": [d.camera_id for d in items],
            "key": [d.idempotency_key for d in items], "body": [d.body.decode() for d in items],
        })
    return int(result.rowcount or 0)


@dataclass(frozen=True)
class Attempt:
    """What one POST got: an outcome, the HTTP status if any, and the error to record."""

    outcome: Outcome
    status: int | None
    error: str | None


async def post(session: aiohttp.ClientSession, hook: Webhook, secret: bytes, key: str, payload: bytes, timeout_s: float) -> Attempt:
    """One signed POST of ``payload`` to ``hook``; never raises for the receiver's faults."""
    headers = {
        "Content-Type": "application/json", "User-Agent": USER_AGENT,
        contract.SIGNATURE_HEADER: contract.sign(secret, payload), contract.KEY_HEADER: key,
    }
    try:
        async with session.post(hook.url, data=payload, headers=headers, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            answer = (await response.content.read(500)).decode(errors="replace").strip()
            result = outcome(response.status)
            return Attempt(result, response.status, None if result == "delivered" else f"HTTP {response.status}: {answer[:200]}")
    except TimeoutError:
        return Attempt("retry", None, f"no answer within {timeout_s:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Attempt("retry", None, f"{exc.__class__.__name__}: {exc}")


class Notifier:
    """Consumes the alerts topic into ``alert_deliveries``, and posts them while it holds the posting lock."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.webhooks = list(settings.webhooks)
        self.secrets = settings.webhook_secrets  # read now: a bad secret file stops the start, with its name
        self._stop = asyncio.Event()
        self._queued = asyncio.Event()  # set when deliveries were queued: posting tasks look at once
        self.backlog = 0
        self._anchored: set[Any] = set()  # partitions known to have a committed offset
        self.watchdog = Watchdog("notifier", settings.stall_timeout_s, waiting=lambda: self.backlog)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        s = self.settings
        if not self.webhooks:
            log.warning("notifier: no webhooks configured (FLEETSIGHT_WEBHOOKS); alerts are read and sent nowhere")
        for hook in self.webhooks:
            log.info("webhook %s: %s, kinds %s, sites %s", hook.name, hook.url, ", ".join(hook.kinds) or "all",
                     ", ".join(hook.sites) or "all")
        await ensure_topics(s)
        engine = make_engine(s.database_url)
        consumer = AIOKafkaConsumer(
            s.kafka_topics.alerts, bootstrap_servers=s.kafka_bootstrap, group_id=f"{s.kafka_topic_prefix}-notifier",
            enable_auto_commit=False, auto_offset_reset="latest", **consumer_timeouts(), **kafka_security(s),
        )
        deadletters = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", **client_timeouts(), **kafka_security(s))
        await consumer.start()
        await deadletters.start()
        posting = asyncio.create_task(self._post_while_locked(engine), name="posting")
        try:
            await self._consume(engine, consumer, deadletters, posting)
        finally:
            self._stop.set()
            await posting
            await consumer.stop()
            await deadletters.stop()
            await engine.dispose()

    # --- queueing ---------------------------------------------------------------------

    async def _consume(
        self, engine: AsyncEngine, consumer: AIOKafkaConsumer, deadletters: AIOKafkaProducer, posting: asyncio.Task[None],
    ) -> None:
        next_sweep = 0.0
        while not self._stop.is_set():
            if posting.done():
                posting.result()  # posting failed in a way it cannot retry: the process exits, its supervisor restarts it
            self.watchdog.busy("reading alerts from Kafka")
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            items: list[Delivery] = []
            refused: list[DeadLetter] = []
            for messages in batches.values():
                for message in messages:
                    try:
                        row = Row.from_dict(json.loads(message.value or b""))
                        if row.table != ALERTS.name:
                            raise ValueError(f"a {row.table} row, not an alert")
                    except (ValueError, TypeError, KeyError, AttributeError) as exc:
                        log.error("skipping unreadable alert record at %s:%s (dead-lettered): %s", message.partition, message.offset, exc)
                        refused.append(DeadLetter.build(Reason.MALFORMED, f"not an alert row: {exc}", "notifier", message.value,
                                                        source_topic=message.topic))
                        continue
                    items += deliveries(row.values, self.webhooks)
            if refused:
                self.watchdog.busy("sending dead letters")
                topic = self.settings.kafka_topics.deadletter

                async def send_letters() -> None:
                    await asyncio.gather(*[await deadletters.send(topic, d.to_record()) for d in refused])  # noqa: B023 (awaited at once)

                # Kafka refusing them for a while (a leader moving) is waited out, not an exit.
                await retry(send_letters, what=f"sending {len(refused)} dead letter(s)", errors=RECOVERABLE, log=log,
                            watchdog=self.watchdog, stopping=self._stop.is_set)
            if items:
                queued = await self._retry(lambda: queue(engine, items), f"queueing {len(items)} deliveries")  # noqa: B023
                sink_metrics.NOTIFY_QUEUED.inc(queued)
                self._queued.set()
            if batches:
                self.watchdog.busy("committing Kafka offsets")
                await commit_read(consumer, log, self.watchdog)
            await self._anchor(consumer)
            self.watchdog.progress()
            self.backlog = await self._behind(consumer)
            sink_metrics.NOTIFY_BACKLOG.set(self.backlog)
            if self.backlog == 0 and self.webhooks and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.settings.notifier_sweep_s
                self.watchdog.busy("sweeping the alerts table")
                swept = await self._retry(lambda: self._sweep(engine), "sweeping the alerts table")
                if swept:
                    log.info("queued %d delivery(ies) of alerts that reached SQL without the alerts topic", swept)
                    self._queued.set()

    async def _sweep(self, engine: AsyncEngine) -> int:
        s = self.settings
        async with engine.connect() as conn:
            rows = (await conn.execute(_SWEEP, {
                "window": s.notifier_sweep_window_s, "after": s.notifier_sweep_after_s, "webhooks": len(self.webhooks),
            })).mappings().all()
        items = [
            d for r in rows
            for d in deliveries({**r, "opened_at": _ms(r["opened_at"]), "closed_at": _ms(r["closed_at"])}, self.webhooks)
        ]
        queued = await queue(engine, items)
        sink_metrics.NOTIFY_QUEUED.inc(queued)
        return queued

    async def _anchor(self, consumer: AIOKafkaConsumer) -> None:
        """Commit where a partition without a committed offset starts: its end.

        A new notifier (no offsets in its group) starts at the end of the topic,
        not at its start: the topic keeps 30 days of alerts, and posting them all
        to a pager on the first start helps nobody; the sweep still posts what
        changed in SQL within its window. Committing that position at once means
        a restart from then on misses nothing: offsets are kept by Kafka for
        ``offsets.retention.minutes`` (7 days by default) of the notifier being away.
        """
        for tp in consumer.assignment() - self._anchored:
            if await consumer.committed(tp) is None:
                position = await consumer.position(tp)
                if not await commit_read(consumer, log, self.watchdog, {tp: position}):
                    continue  # a rebalance: whoever has the partition next anchors it
                log.info("alerts partition %d: new to this notifier group, reading from its end (offset %d)", tp.partition, position)
            self._anchored.add(tp)

    @staticmethod
    async def _behind(consumer: AIOKafkaConsumer) -> int:
        """Alert records in the assigned partitions not read yet; 1 while that is unknown."""
        read = {tp: await consumer.position(tp) for tp in consumer.assignment() if consumer.highwater(tp) is not None}
        return fetched_lag(consumer, read, unknown=1)  # not in the group yet, nothing fetched yet: waiting

    # --- posting ----------------------------------------------------------------------

    async def _post_while_locked(self, engine: AsyncEngine) -> None:
        """Post while this notifier holds the posting lock; try for it every few seconds otherwise."""
        while not self._stop.is_set():
            try:
                async with engine.connect() as raw:
                    conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
                    if (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": POSTING_LOCK})).scalar():
                        log.info("this notifier posts the alerts (it holds the posting lock)")
                        await self._post_all(engine, conn)
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": POSTING_LOCK})
            except (OperationalError, DBAPIError, OSError) as exc:
                log.warning("posting paused: the database connection holding the lock failed (%s)", exc)
            await wait_event(self._stop, 5.0)

    async def _post_all(self, engine: AsyncEngine, lock: AsyncConnection) -> None:
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(self._post_hook(engine, session, hook), name=f"webhook {hook.name}") for hook in self.webhooks]
            try:
                while not self._stop.is_set():
                    await wait_event(self._stop, 5.0)
                    await lock.execute(text("SELECT 1"))  # the lock lives as long as this connection
                    await self._count_pending(engine)
                    for task in tasks:
                        if task.done() and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _count_pending(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            pending = {r.webhook: r.n for r in await conn.execute(_COUNT_PENDING)}
        for hook in self.webhooks:
            sink_metrics.NOTIFY_PENDING.labels(hook.name).set(pending.get(hook.name, 0))

    async def _post_hook(self, engine: AsyncEngine, session: aiohttp.ClientSession, hook: Webhook) -> None:
        """Post one webhook's pending deliveries in queue order, each until it is done with."""
        s = self.settings
        while not self._stop.is_set():
            self._queued.clear()
            rows = await self._retry(lambda: self._pending(engine, hook.name), f"reading webhook {hook.name}'s deliveries", watched=False)
            if not rows:
                await wait_event(self._queued, 1.0)
                continue
            for row in rows:
                backoff = delays(first_delay=1.0, max_delay=s.webhook_retry_max_s, jitter=0.2)
                attempts = row.attempts
                while not self._stop.is_set():
                    attempts += 1
                    started = time.perf_counter()
                    attempt = await post(session, hook, self.secrets[hook.name], row.idempotency_key, row.body.encode(), s.webhook_timeout_s)
                    sink_metrics.NOTIFY_POST.labels(hook.name).observe(time.perf_counter() - started)
                    status: str = attempt.outcome
                    if status == "retry" and (datetime.now(UTC) - row.queued_at).total_seconds() > s.webhook_give_up_s:
                        status = "expired"
                    await self._retry(lambda: self._record(engine, row.delivery_id, status, attempt), "recording a delivery", watched=False)  # noqa: B023
                    sink_metrics.NOTIFY_ATTEMPTS.labels(hook.name, status).inc()
                    if status == "delivered":
                        sink_metrics.NOTIFY_DELAY.observe(max(0.0, (datetime.now(UTC) - row.queued_at).total_seconds()))
                        break
                    if status in ("rejected", "expired"):
                        verdict = "the receiver refused it" if status == "rejected" else "given up"
                        log.error("webhook %s: alert %s (%s) not delivered, %s after %d attempt(s): %s",
                                  hook.name, row.alert_id, row.state, verdict, attempts, attempt.error)
                        break
                    delay = next(backoff)
                    log.warning("webhook %s: %s; trying again in %.1f s", hook.name, attempt.error, delay)
                    await wait_event(self._stop, delay)

    @staticmethod
    async def _pending(engine: AsyncEngine, webhook: str) -> list[_Pending]:
        async with engine.connect() as conn:
            return [_Pending(**r) for r in (await conn.execute(_PENDING, {"webhook": webhook, "limit": 200})).mappings()]

    @staticmethod
    async def _record(engine: AsyncEngine, delivery_id: int, status: str, attempt: Attempt) -> None:
        async with engine.begin() as conn:
            await conn.execute(_ATTEMPTED, {
                "delivery_id": delivery_id, "status": "pending" if status == "retry" else status,
                "response_status": attempt.status, "error": attempt.error,
            })

    async def _retry(self, call: Callable[[], Awaitable[T]], what: str, watched: bool = True) -> T:
        """``call`` until the database takes it; ``watched``: the stall watchdog sees the wait (the consumer's, not posting's)."""
        return await retry(call, what=what, errors=(OperationalError, DBAPIError, OSError), log=log,
                           watchdog=self.watchdog if watched else None, stopping=self._stop.is_set)


@dataclass(frozen=True)
class _Pending:
    delivery_id: int
    alert_id: str
    state: str
    idempotency_key: str
    body: str
    attempts: int
    queued_at: datetime


def sample_alert(now_ms: int) -> dict[str, Any]:
    """The alert ``fleetsight notifier --test`` posts: kind ``test``, so a receiver can tell it apart."""
    return {
        "alert_id": f"fleetsight-test|test||{now_ms}", "camera_id": "fleetsight-test", "site": "fleetsight-test", "kind": "test",
        "subject": "", "state": "open", "opened_at": now_ms, "closed_at": None,
        "detail": "a test notification from `fleetsight notifier --test`; no camera is involved",
    }


async def send_test(settings: NotifierSettings, name: str) -> Attempt:
    """Post one signed test alert to the webhook called ``name``, now, outside the queue."""
    hook = next((w for w in settings.webhooks if w.name == name), None)
    if hook is None:
        raise ValueError(f"no webhook named {name!r} (configured: {', '.join(w.name for w in settings.webhooks) or 'none'})")
    alert = sample_alert(int(time.time() * 1000))
    key = contract.idempotency_key(alert["alert_id"], "open", hook.name)
    async with aiohttp.ClientSession() as session:
        return await post(session, hook, hook.secret(), key, contract.body(alert), settings.webhook_timeout_s)


async def run_notifier(settings: NotifierSettings) -> int:
    """Entry point of ``fleetsight notifier``."""
    try:
        notifier = Notifier(settings)
    except (OSError, ValueError) as exc:
        log.error("notifier cannot start: %s", exc)
        return 2
    return await run_supervised(
        notifier.run, notifier.stop, notifier.watchdog, metrics_port=settings.notifier_metrics_port,
        metrics_bind=settings.metrics_bind, log=log, on_failure="notifier failed; unqueued alerts will be read again",
    )
