"""How this process connects to Kafka: plain TCP, or its own login over TLS,
with timeouts short enough that a frozen broker is abandoned in seconds.

Every aiokafka client of the pipeline (the bridge's producer and shard
group, the worker's Faust app and lag probe, the sink's consumer, topic
creation) takes these settings, so one process has one identity.
SCRAM-SHA-512: the password never crosses the wire, Kafka keeps only its
salted hash, and users are added to a running cluster without a restart
(`kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[password=...]'`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.helpers import create_ssl_context

from runtime.settings import KafkaSettings
from runtime.watchdog import Watchdog

MECHANISM = "SCRAM-SHA-512"

# How long one request to one broker may go unanswered before the client
# drops that connection, refreshes its metadata and goes to the partition's
# new leader or the group's new coordinator. aiokafka's default is 40 s and
# Faust's 90 s: a broker frozen by SIGSTOP (or a stalled disk or VM) answers
# nothing and closes nothing, so the whole pipeline stood still for all of a
# 40 s freeze (issue 35), although Kafka itself fences the node and moves
# its leaders within broker.session.timeout.ms (3 s, deploy/kafka/kafka.env).
# A client meets a frozen node twice before it has moved on (the request
# that hangs, then maybe a metadata or coordinator lookup sent to it), so
# 6 s keeps a freeze's stand-still near 12 s at worst; at 10 s one run stood
# still 30 s (three lookups in a row went to the frozen node). 6 s still lets
# a slow but live broker answer on a loaded 2-core box, and a produce that
# times out is retried by the idempotent producer, with no duplicate.
REQUEST_TIMEOUT_S = 6.0
# A consumer group member's session (the sink's, the notifier's): its
# partitions go to the others this long after it dies. The worker's and the
# bridges' are settings of their own (6 s: Faust wants a session no longer
# than its requests, and 6 s is Kafka's least, group.min.session.timeout.ms).
SESSION_TIMEOUT_S = 10.0
RETRY_BACKOFF_MS = 200
# How old the client's picture of the cluster may grow: a fenced node drops
# out of the metadata Kafka answers, and a client that still lists it sends
# lookups there (aiokafka picks a node at random) and waits a request's time.
# Kafka's default is 5 minutes; a metadata request every 5 s costs nothing.
METADATA_MAX_AGE_MS = 5000


def client_timeouts() -> dict[str, Any]:
    """aiokafka's timeout arguments for any client (producer, consumer, admin)."""
    return {
        "request_timeout_ms": int(REQUEST_TIMEOUT_S * 1000), "retry_backoff_ms": RETRY_BACKOFF_MS,
        "metadata_max_age_ms": METADATA_MAX_AGE_MS,
    }


def consumer_timeouts(session_timeout_s: float = SESSION_TIMEOUT_S) -> dict[str, Any]:
    """A group consumer's: the client's, its session and a heartbeat a third of it."""
    session_ms = int(session_timeout_s * 1000)
    return {**client_timeouts(), "session_timeout_ms": session_ms, "heartbeat_interval_ms": max(500, session_ms // 3)}


# Faults Kafka reports and recovers from by itself: a leader moving or
# missing, too few in-sync copies while a node catches up, a buffer that did
# not drain in a request's time, a coordinator moving, a rebalance. The
# pipeline waits them out (and the watchdog knows it is waiting, not hung);
# anything else (a refused login, a record too large) is an error.
RECOVERABLE = (
    kafka_errors.KafkaTimeoutError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.NotEnoughReplicasError,
    kafka_errors.NotEnoughReplicasAfterAppendError,
    kafka_errors.NotLeaderForPartitionError,
    kafka_errors.LeaderNotAvailableError,
    kafka_errors.CommitFailedError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.CoordinatorNotAvailableError,
    kafka_errors.NotCoordinatorError,
)


class KafkaFault(Exception):
    """A fault Kafka reported and recovers from, raised where the caller retries (the worker's batch)."""


def recoverable(exc: BaseException) -> bool:
    """Is ``exc`` a fault Kafka recovers from (wait and try again), not an error?"""
    return isinstance(exc, RECOVERABLE) or (isinstance(exc, kafka_errors.KafkaError) and exc.retriable)


def kafka_security(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka's connection arguments for this process (none for plain TCP)."""
    if not settings.kafka_username:
        return {}
    assert settings.kafka_password_file is not None  # the settings insist on it
    try:
        password = settings.kafka_password_file.read_text().strip()
    except OSError as exc:
        raise RuntimeError(f"cannot read the Kafka password of {settings.kafka_username}: {exc}") from exc
    ca = str(settings.kafka_ca_file) if settings.kafka_ca_file else None
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": MECHANISM,
        "sasl_plain_username": settings.kafka_username,
        "sasl_plain_password": password,
        # Verifies the broker's certificate and host name.
        "ssl_context": create_ssl_context(cafile=ca),
    }


async def partition_health(
    owner: AIOKafkaProducer | AIOKafkaConsumer, partitions: Iterable[TopicPartition], timeout_s: float = REQUEST_TIMEOUT_S,
) -> str | None:
    """What is wrong with ``partitions`` as Kafka tells it now, or None if they look well.

    Asked through ``owner``'s connections when records
    wait on Kafka longer than usual: no answer, a partition without a leader
    or one short of in-sync copies (a node down or catching up) are faults
    Kafka reports and recovers from; all well while nothing moves is a hang.
    """
    # A producer shows its client; a consumer keeps it private (aiokafka 0.14).
    client = owner.client if isinstance(owner, AIOKafkaProducer) else owner._client  # noqa: SLF001
    try:
        cluster = await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
    except (kafka_errors.KafkaError, TimeoutError, OSError) as exc:
        return f"no Kafka node answers ({type(exc).__name__})"
    for tp in sorted(partitions):
        # aiokafka keeps each partition's replicas and in-sync set only here (0.14).
        meta = cluster._partitions.get(tp.topic, {}).get(tp.partition)  # noqa: SLF001
        if meta is None or meta.leader is None or meta.leader < 0:
            return f"{tp.topic}[{tp.partition}] has no leader"
        if len(meta.isr) < len(meta.replicas):
            return f"{tp.topic}[{tp.partition}] has {len(meta.isr)} of {len(meta.replicas)} copies in sync"
    return None


COMMIT_CHECK_S = 5.0  # how long an offset commit waits before asking Kafka how it is


async def commit_read(
    consumer: AIOKafkaConsumer, log: logging.Logger, watchdog: Watchdog | None = None,
    offsets: dict[TopicPartition, int] | None = None,
) -> bool:
    """Commit what ``consumer`` has read (or ``offsets``); False when Kafka refused it for a reason it recovers from.

    A rebalance that lands between a batch and its commit makes aiokafka
    raise ``CommitFailedError`` (UnknownMemberId, IllegalGeneration): the sink
    exited with code 1 on it five times in two cluster runs (issue 35). The
    records are simply read again, by this process or the partition's new
    owner, and every writer here is idempotent; so it is logged and the loop
    goes on (the consumer rejoins the group on its next fetch).
    """
    commit = asyncio.ensure_future(consumer.commit(offsets))
    try:
        # aiokafka waits for the group's coordinator without end: with Kafka
        # killed mid-commit the sink sat here silent for its whole stall
        # timeout and the watchdog restarted it (soak, 2 of 5 backlog runs on
        # a loaded box). So the wait is cut into slices, each followed by a
        # look at Kafka: a fault it reports is waited out, not judged a hang.
        while not (await asyncio.wait({commit}, timeout=COMMIT_CHECK_S))[0]:
            if watchdog is not None and (problem := await partition_health(consumer, consumer.assignment())) is not None:
                watchdog.fault(f"offset commit waits: {problem}")
        commit.result()
    except (*RECOVERABLE, kafka_errors.IllegalStateError) as exc:  # IllegalState: no partitions assigned, mid-rebalance
        # CommitFailedError's text is a paragraph about poll intervals; what happened is simpler.
        why = "the group rebalanced" if isinstance(exc, kafka_errors.CommitFailedError) else str(exc)[:200]
        log.warning("offset commit refused (%s: %s); those records will be read again", type(exc).__name__, why)
        if watchdog is not None:
            watchdog.fault(f"offset commit refused: {type(exc).__name__}")
        return False
    finally:
        if not commit.done():
            commit.cancel()  # we were cancelled: stopping
    return True
