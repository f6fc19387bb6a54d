"""An isolated pipeline on the shared local services: the one way tests and benchmarks get one.

Its own MQTT topic root, Kafka topic prefix and consumer groups, and
database, all named after it, so any number run side by side on one
Mosquitto, Kafka and PostgreSQL, and :meth:`Sandbox.remove` takes away
everything it made (database, topics, Faust's own topics, retained
messages). Before issue 37 the integration tests, the stream benchmark and
the outage benchmark each assembled this themselves, and the bridge
benchmark left its topics behind.
"""

from __future__ import annotations

import asyncio
import uuid
from types import TracebackType
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from fleetsight.mqtt_users import admin_settings
from runtime.kafka_client import client_timeouts, kafka_security
from runtime.mqtt import make_client, publish_confirmed, read_retained
from runtime.settings import Settings


def admin_dsn(settings: Settings, database: str = "postgres") -> str:
    """A libpq URL as the local cluster's superuser, to ``database`` on the settings' host."""
    host = settings.postgres_dsn.split("@", 1)[1].split("/", 1)[0]
    return f"postgresql://postgres@{host}/{database}"


def clear_retained(settings: Settings, pattern: str) -> None:
    """Remove the retained messages under ``pattern`` (the admin login may)."""
    found = read_retained(admin_settings(settings), pattern)
    if not found:
        return
    client = make_client(admin_settings(settings), f"{settings.mqtt_topic_root}-clear-{uuid.uuid4().hex[:6]}", persistent=False)
    client.max_inflight_messages_set(200)
    client.connect(settings.mqtt.host, settings.mqtt.port)
    client.loop_start()
    try:
        publish_confirmed(client, [(topic, b"") for topic in found], retain=True, timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()


class Sandbox:
    """Settings for a pipeline of its own on ``base``'s services, its database made and everything removed after.

    ``async with Sandbox(base) as box:`` makes the database (migrated to the
    head) and removes it all on the way out; ``box.settings`` is what to
    start the pipeline's processes with (``devtools.processes.spawn``).
    """

    def __init__(self, base: Settings, prefix: str = "t", **overrides: Any) -> None:
        self.name = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.db_name = f"fs_{self.name}"
        dsn = admin_dsn(base, self.db_name).replace("postgresql://", "postgresql+asyncpg://")
        # Only where the services are, and how to log in to Kafka: nothing
        # else of the caller's environment changes the pipeline under test.
        self.settings = Settings(
            mqtt_url=base.mqtt_url,
            kafka_bootstrap=base.kafka_bootstrap,
            kafka_username=base.kafka_username,
            kafka_password_file=base.kafka_password_file,
            kafka_ca_file=base.kafka_ca_file,
            services_dir=base.services_dir,
            mqtt_topic_root=self.name,
            kafka_topic_prefix=self.name,
            stream_app_id=self.name,
            database_url=dsn,
            **overrides,
        )

    @property
    def dsn(self) -> str:
        """The sandbox's database as the superuser (asyncpg, psql)."""
        return admin_dsn(self.settings, self.db_name)

    async def _as_superuser(self, statement: str) -> None:
        conn = await asyncpg.connect(admin_dsn(self.settings))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def create_database(self) -> None:
        """Make the database and migrate it to the head."""
        await self._as_superuser(f'CREATE DATABASE "{self.db_name}"')
        from sinks.db import upgrade

        await asyncio.to_thread(upgrade, self.settings.database_url)

    async def remove(self) -> None:
        """Drop the database, delete the topics named after the sandbox, clear its retained messages."""
        await self._as_superuser(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.kafka_bootstrap, **client_timeouts(), **kafka_security(self.settings),
        )
        await admin.start()
        try:
            ours = [t for t in await admin.list_topics() if t.startswith(self.name)]
            if ours:
                await admin.delete_topics(ours)
        finally:
            await admin.close()
        try:
            clear_retained(self.settings, f"{self.name}/#")
        except OSError:
            pass  # a test's private broker, already gone with its retained messages

    async def __aenter__(self) -> Sandbox:
        await self.create_database()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.remove()
