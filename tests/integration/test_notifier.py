"""The alert notifier against real Kafka, PostgreSQL and a real HTTP receiver the test runs.

The receiver goes down for a minute while alerts keep coming: every alert
change still reaches each webhook that wants it, once per idempotency key,
signed, an alert's opening before its closing; the notifier keeps reading
Kafka meanwhile, and SQL shows what waits and why.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer

from devtools.ports import free_port
from runtime.kafka_admin import ensure_topics
from runtime.waiting import WaitTimeout, wait_for
from schemas import webhook as contract
from schemas.aggregates import ALERTS, Row
from tests.support import Stack, publish

OUTAGE_S = 60.0
REJECTED_DETAIL = "the receiver refuses this one"


@dataclass
class Receiver:
    """An HTTP server that records what each webhook path got; it can be stopped and started on its port."""

    secrets: dict[str, bytes]
    port: int = field(default_factory=free_port)
    got: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))  # webhook -> requests
    bad_signatures: int = 0
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        hook = request.match_info["hook"]
        payload = await request.read()
        if not contract.verify(self.secrets[hook], request.headers.get(contract.SIGNATURE_HEADER, ""), payload):
            self.bad_signatures += 1
            return web.Response(status=401, text="bad signature")
        body = json.loads(payload)
        self.got[hook].append({"key": request.headers[contract.KEY_HEADER], "body": body})
        if body["detail"] == REJECTED_DETAIL:
            return web.Response(status=422, text="not for us")
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{hook}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, hook: str) -> str:
        return f"http://127.0.0.1:{self.port}/{hook}"


def alert(n: int, state: str, kind: str, site: str, opened: int, detail: str = "") -> Row:
    return Row(ALERTS.name, {
        "alert_id": f"cam-{n}|{kind}||{opened}", "camera_id": f"cam-{n}", "site": site, "kind": kind, "subject": "",
        "state": state, "opened_at": opened, "closed_at": opened + 60_000 if state == "closed" else None,
        "detail": detail or f"{kind} at cam-{n}", "version": 1 if state == "open" else 2,
    })


async def send(stack: Stack, records: list[Row | bytes]) -> None:
    """As the worker sends alerts: key = alert id, acks=all."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            if isinstance(record, Row):
                await producer.send_and_wait(stack.settings.kafka_topics.alerts, record.to_record(), key=record.values["alert_id"].encode())
            else:
                await producer.send_and_wait(stack.settings.kafka_topics.alerts, record)
    finally:
        await producer.stop()


def wanted(rows: list[Row], kinds: tuple[str, ...] = (), sites: tuple[str, ...] = ()) -> set[tuple[str, str]]:
    return {(r.values["alert_id"], r.values["state"]) for r in rows
            if (not kinds or r.values["kind"] in kinds) and (not sites or r.values["site"] in sites)}


async def test_every_alert_change_reaches_its_webhooks_once_per_key_through_a_receiver_down_for_a_minute(
    stack_factory, tmp_path: Path,
) -> None:
    secrets = {"ops": b"ops-secret-1", "floor": b"floor-secret-2"}
    for name, secret in secrets.items():
        (tmp_path / name).write_bytes(secret + b"\n")
    receiver = Receiver(secrets)
    stack: Stack = await stack_factory(
        webhooks=[
            {"name": "ops", "url": receiver.url("ops"), "secret_file": str(tmp_path / "ops")},
            {"name": "floor", "url": receiver.url("floor"), "secret_file": str(tmp_path / "floor"),
             "kinds": ["occupancy"], "sites": ["site-b"]},
        ],
        webhook_retry_max_s=5, webhook_timeout_s=5, notifier_sweep_s=1, notifier_sweep_after_s=2,
    )
    try:
        await start_notifier(stack, receiver)
        now = int(time.time() * 1000)
        kinds = ("offline", "occupancy", "video_down", "overloaded")
        first = [alert(n, "open", kinds[n % 4], "site-b" if n % 2 else "site-a", now + n) for n in range(8)]
        first.append(alert(8, "open", "tamper", "site-a", now + 8, detail=REJECTED_DETAIL))
        await send(stack, [*first, b"not json", Row("camera_status", {"camera_id": "x"}).to_record()])
        sent: list[Row] = list(first)

        async def received(hook: str, want: set[tuple[str, str]]) -> bool:
            stack.assert_running()
            return {(r["body"]["alert_id"], r["body"]["state"]) for r in receiver.got[hook]} >= want

        await until(stack, lambda: received("ops", wanted(sent)), 60, "the first alerts at the ops webhook")

        # The receiver goes down; alerts keep coming, through Kafka and (the reconciler's kind) straight into SQL.
        await receiver.stop()
        down_since = time.monotonic()
        second = [alert(n, "closed", r.values["kind"], r.values["site"], r.values["opened_at"]) for n, r in enumerate(first[:8])]
        second += [alert(n, "open", kinds[n % 4], "site-b", now + n) for n in range(10, 14)]
        await send(stack, second)
        sent += second
        reconciled = alert(20, "open", "reconcile", "site-a", now)
        await stack.query(
            "INSERT INTO alerts (alert_id, camera_id, site, kind, subject, state, opened_at, detail, version) "
            "VALUES ($1, $2, $3, 'reconcile', '', 'open', to_timestamp($4 / 1000.0), $5, 1)",
            reconciled.values["alert_id"], "cam-20", "site-a", now, reconciled.values["detail"],
        )
        sent.append(reconciled)

        # Nothing waits on the receiver: everything is queued, and SQL says what is pending and why.
        async def queued_and_failing() -> bool:
            stack.assert_running()
            rows = await stack.query("SELECT webhook, alert_id, state, status, attempts, last_error FROM alert_deliveries")
            queued = {(r["alert_id"], r["state"]) for r in rows if r["webhook"] == "ops"}
            failing = [r for r in rows if r["status"] == "pending" and r["attempts"] >= 3 and r["last_error"]]
            return queued >= wanted(sent) and len(failing) >= 1

        await until(stack, queued_and_failing, 60, "every delivery queued while the receiver is down, and attempts failing")
        backlog = await stack.query("SELECT count(*) AS n FROM alert_deliveries WHERE status = 'pending'")
        assert backlog[0]["n"] >= len(second), backlog
        # The outage lasts its minute (a scenario's length, not a wait for something to happen).
        await wait_for(lambda: time.monotonic() - down_since >= OUTAGE_S, OUTAGE_S + 5, "the outage to last its minute", interval=1)
        await receiver.start()

        await until(stack, lambda: received("ops", wanted(sent)), 90, "every alert change at the ops webhook")
        await until(stack, lambda: received("floor", wanted(sent, ("occupancy",), ("site-b",))), 30, "the floor webhook's")

        # A restarted notifier re-sends nothing it delivered, and misses nothing sent while it was away.
        stack.kill("notifier", signal.SIGTERM)
        last = alert(30, "open", "offline", "site-a", now + 30)
        await send(stack, [last])
        sent.append(last)
        stack.start("notifier")
        await until(stack, lambda: received("ops", wanted(sent)), 60, "the alert after the restart")
    finally:
        await receiver.stop()

    assert receiver.bad_signatures == 0
    for hook, want in (("ops", wanted(sent)), ("floor", wanted(sent, ("occupancy",), ("site-b",)))):
        keys = [r["key"] for r in receiver.got[hook]]
        assert len(keys) == len(set(keys)), f"{hook}: a key posted twice"
        got = [(r["body"]["alert_id"], r["body"]["state"]) for r in receiver.got[hook]]
        assert set(got) == want, hook
        for r in receiver.got[hook]:
            assert r["key"] == contract.idempotency_key(r["body"]["alert_id"], r["body"]["state"], hook)
        for alert_id, state in got:
            if state == "closed":
                assert got.index((alert_id, "open")) < got.index((alert_id, "closed")), f"{hook}: {alert_id} closed before it opened"

    rows = {(r["webhook"], r["alert_id"], r["state"]): r for r in await stack.query("SELECT * FROM alert_deliveries")}
    rejected = first[8].values["alert_id"]
    assert rows[("ops", rejected, "open")]["status"] == "rejected"
    assert rows[("ops", rejected, "open")]["attempts"] == 1  # a 4xx is final: not tried again
    assert rows[("ops", rejected, "open")]["response_status"] == 422
    others = [r for k, r in rows.items() if k != ("ops", rejected, "open")]
    assert {r["status"] for r in others} == {"delivered"}
    assert all(r["delivered_at"] is not None for r in others)
    assert max(r["attempts"] for r in others) >= 3  # the ones that waited out the outage
    assert "skipping unreadable alert record" in stack.log_tail(200)
    letters = await stack.deadletters(expect=2)
    assert {(d["stage"], d["reason"], d["source_topic"]) for d in letters} == {("notifier", "malformed", stack.settings.kafka_topics.alerts)}
    assert {d["payload"] for d in letters} >= {"not json"}


async def start_notifier(stack: Stack, receiver: Receiver) -> None:
    """The receiver up, then a notifier that has taken its place in the alerts topic."""
    await receiver.start()
    await ensure_topics(stack.settings)
    stack.start("notifier")
    await reading(stack)


async def reading(stack: Stack) -> None:
    """A new notifier starts at the end of the alerts topic: wait until it has its place in every partition."""
    partitions = stack.settings.kafka_partitions
    await until(stack, lambda: stack.logs["notifier"].read_text().count("reading from its end") >= partitions, 60,
                "the notifier to take its place in the alerts topic")


async def until(stack: Stack, check, timeout: float, what: str) -> None:
    try:
        await wait_for(check, timeout, what, interval=0.5)
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}\n{stack.log_tail(60)}") from None


async def test_a_camera_that_goes_quiet_and_comes_back_is_told_to_the_webhook(stack_factory, tmp_path: Path) -> None:
    """End to end: the camera's health events through the real broker, bridge and worker; the offline
    alert the worker opens and closes reaches the webhook as an opening, then a closing."""
    (tmp_path / "ops").write_bytes(b"ops-secret")
    receiver = Receiver({"ops": b"ops-secret"})
    stack: Stack = await stack_factory(
        webhooks=[{"name": "ops", "url": receiver.url("ops"), "secret_file": str(tmp_path / "ops"), "kinds": ["offline"]}],
        offline_after_s=6, status_sweep_s=1, alert_clear_s=2,
    )
    await receiver.start()
    try:
        for component in ("bridge", "worker", "notifier"):
            stack.start(component)
        await stack.wait_bridge_online()
        await reading(stack)
        topics = stack.settings.mqtt_topics
        seq = 0

        def beat() -> None:
            nonlocal seq
            seq += 1
            health = {"v": 1, "camera_id": "cam-door", "site": "shop-1", "seq": seq, "ts": int(time.time() * 1000),
                      "type": "health", "data": {"uptime_s": float(seq), "outbox_depth": 0}}
            publish(stack.settings, [(topics.events("cam-door"), json.dumps(health).encode())])

        def states() -> list[str]:
            stack.assert_running()
            return [r["body"]["state"] for r in receiver.got["ops"]]

        beat()  # heard once, then silent: offline after 6 s
        await until(stack, lambda: states() == ["open"], 120, "the offline alert at the webhook")
        opened = receiver.got["ops"][0]["body"]
        assert (opened["kind"], opened["camera_id"], opened["site"]) == ("offline", "cam-door", "shop-1")

        async def closed() -> bool:
            beat()  # heard again, and kept hearing: the alert clears after 2 s
            return states() == ["open", "closed"]

        await until(stack, closed, 120, "the offline alert's closing at the webhook")
        assert receiver.got["ops"][1]["body"]["alert_id"] == opened["alert_id"]
        assert receiver.bad_signatures == 0
    finally:
        await receiver.stop()


async def test_notifier_test_posts_one_signed_test_alert_and_says_what_came_back(tmp_path: Path, monkeypatch, capsys) -> None:
    from fleetsight.cli import main

    (tmp_path / "ops").write_bytes(b"ops-secret")
    receiver = Receiver({"ops": b"ops-secret"})
    monkeypatch.setenv("FLEETSIGHT_WEBHOOKS", json.dumps([{"name": "ops", "url": receiver.url("ops"), "secret_file": str(tmp_path / "ops")}]))
    monkeypatch.setenv("FLEETSIGHT_WEBHOOK_TIMEOUT_S", "5")
    assert await asyncio.to_thread(main, ["notifier", "--test", "ops"]) == 1  # nobody listens yet
    assert "not delivered (retry)" in capsys.readouterr().out
    await receiver.start()
    try:
        assert await asyncio.to_thread(main, ["notifier", "--test", "ops"]) == 0
        assert "webhook ops: delivered (HTTP 204)" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["notifier", "--test", "pager"]) == 2  # no such webhook
    finally:
        await receiver.stop()
    assert receiver.bad_signatures == 0
    [request] = receiver.got["ops"]
    assert (request["body"]["kind"], request["body"]["state"]) == ("test", "open")


async def test_an_alert_that_opened_and_closed_between_two_sweeps_reaches_the_webhook_whole(stack_factory, tmp_path: Path) -> None:
    """A reconcile alert lives one reconciler pass: it reaches SQL (not the topic) already closed. The
    webhook still gets its opening, then its closing (it used to get the closing only)."""
    (tmp_path / "ops").write_bytes(b"ops-secret")
    receiver = Receiver({"ops": b"ops-secret"})
    stack: Stack = await stack_factory(
        webhooks=[{"name": "ops", "url": receiver.url("ops"), "secret_file": str(tmp_path / "ops")}],
        notifier_sweep_s=1, notifier_sweep_after_s=2,
    )
    try:
        await start_notifier(stack, receiver)
        now = int(time.time() * 1000)
        await stack.query(
            "INSERT INTO alerts (alert_id, camera_id, site, kind, subject, state, opened_at, closed_at, detail, version) "
            "VALUES ($1, 'cam-r', 'site-a', 'reconcile', 'minute', 'closed', to_timestamp($2 / 1000.0), "
            "to_timestamp($2 / 1000.0 + 30), 'SQL and the worker disagreed for one pass', 2)",
            f"cam-r|reconcile|minute|{now}", now,
        )

        def states() -> list[str]:
            stack.assert_running()
            return [r["body"]["state"] for r in receiver.got["ops"]]

        await until(stack, lambda: len(states()) >= 2, 60, "the reconcile alert at the webhook")
        assert states() == ["open", "closed"]
        opening, closing = (r["body"] for r in receiver.got["ops"])
        assert opening["alert_id"] == closing["alert_id"] == f"cam-r|reconcile|minute|{now}"
        assert opening["closed_at"] is None and closing["closed_at"] is not None
    finally:
        await receiver.stop()
