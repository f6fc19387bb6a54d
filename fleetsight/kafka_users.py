"""Kafka users of the pipeline, and what each may touch (Kafka ACLs).

Across machines every process logs in as its own user
(``runtime.kafka_client``) and the cluster denies what no ACL allows
(``allow.everyone.if.no.acl.found=false``). The rules follow what each
process does and nothing more:

- the bridge writes events and dead letters, and reads the shards topic
  in its consumer group (it is never written);
- the worker reads events in its Faust group, writes row batches, alerts
  and dead letters, and uses Faust's leader topic;
- the sink reads row batches in its group;
- the notifier reads alerts in its group and writes dead letters (an
  alert record it cannot read);
- each may create and describe FleetSight's topics (each makes the ones
  it needs when it starts, with the settings they must have).

``fleetsight kafka acls`` prints them as ``kafka-acls.sh`` commands.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from runtime.settings import Settings

# Default user names; set FLEETSIGHT_KAFKA_USERNAME of each process to match.
USERS = {"bridge": "fleetsight-bridge", "worker": "fleetsight-worker", "sink": "fleetsight-sink", "notifier": "fleetsight-notifier"}


@dataclass(frozen=True)
class Acl:
    """Allow ``user`` these operations on a topic or group (a name, or every name with that prefix)."""

    user: str
    resource: str  # "topic" or "group"
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False

    def args(self) -> list[str]:
        """The arguments of ``kafka-acls.sh --add`` for this rule."""
        out = ["--add", "--allow-principal", f"User:{self.user}", f"--{self.resource}", self.name]
        for operation in self.operations:
            out += ["--operation", operation]
        if self.prefixed:
            out += ["--resource-pattern-type", "prefixed"]
        return out


def acls(settings: Settings, users: dict[str, str] = USERS) -> list[Acl]:
    """Every ACL the pipeline needs on a cluster that denies by default."""
    topics = settings.kafka_topics
    bridge, worker, sink, notifier = users["bridge"], users["worker"], users["sink"], users["notifier"]
    ours = f"{settings.kafka_topic_prefix}."
    return [
        *(Acl(user, "topic", ours, ("Create", "Describe"), prefixed=True) for user in (bridge, worker, sink, notifier)),
        Acl(bridge, "topic", topics.events, ("Write",)),
        Acl(bridge, "topic", topics.deadletter, ("Write",)),
        Acl(bridge, "topic", topics.bridge_shards, ("Read",)),
        Acl(bridge, "group", f"{settings.kafka_topic_prefix}-bridges", ("Read",)),
        Acl(worker, "topic", topics.events, ("Read",)),
        Acl(worker, "topic", topics.rows, ("Write",)),
        Acl(worker, "topic", topics.alerts, ("Write",)),
        Acl(worker, "topic", topics.deadletter, ("Write",)),
        Acl(worker, "topic", f"{settings.stream_app_id}-__assignor-__leader", ("Read", "Write", "Create", "Describe")),
        Acl(worker, "group", settings.stream_app_id, ("Read", "Describe")),
        Acl(sink, "topic", topics.rows, ("Read",)),
        Acl(sink, "group", f"{settings.kafka_topic_prefix}-sink", ("Read",)),
        Acl(notifier, "topic", topics.alerts, ("Read",)),
        Acl(notifier, "topic", topics.deadletter, ("Write",)),
        Acl(notifier, "group", f"{settings.kafka_topic_prefix}-notifier", ("Read",)),
    ]


def acl_script(settings: Settings, command_config: str = "admin.properties", users: dict[str, str] = USERS) -> str:
    """The ACLs as ``kafka-acls.sh`` commands an operator runs once, logged in as a Kafka admin."""
    head = ["kafka-acls.sh", "--bootstrap-server", settings.kafka_bootstrap, "--command-config", command_config]
    return "".join(shlex.join(head + rule.args()) + "\n" for rule in acls(settings, users))
