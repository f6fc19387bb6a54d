"""Several MQTT messages of one camera in one Kafka record (pure, no I/O).

A record of the events topic is one camera's consecutive events as a JSON
event or array: the contract ``schemas.codec`` reads, the worker and old
records alike. The bridge used to write one record per MQTT message (an
edge's batch, up to 100 events). After an outage the lanes' inboxes hold
hundreds of messages, several of each camera. Written as one record per
camera, at most :data:`PACK_EVENTS` events, the stream worker did
141,000-146,000 events/s against 107,000-121,000 at 100 a record, 0.34
against 0.24-0.26 of a bare consumer (issue 37). Faust's delivery and the
worker's work per record (status, groups, the seq sets) are paid a fifth as
often.

Only messages already waiting are packed (nothing waits for more), so a
live camera's message goes on alone as soon as it came. A record that is
packed with no other is written byte for byte as it came.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.codec import MAX_BATCH

# At most this many events in a packed record: a worker's batch of 1,000
# records then holds at most 500,000 events.
PACK_EVENTS = 500
assert PACK_EVENTS <= MAX_BATCH  # a packed record is still a message the contract accepts


@dataclass
class Pack:
    """The records of one camera's messages that travel as one record."""

    key: bytes
    parts: list[bytes] = field(default_factory=list)  # each message's events, as JSON
    events: int = 0
    size: int = 2  # of the joined value: the brackets, then each part and its comma

    def value(self) -> bytes:
        """The packed record's value: one part as it came, several as one JSON array of their events, in order."""
        if len(self.parts) == 1:
            return self.parts[0]
        return b"[" + b",".join(_inner(part) for part in self.parts) + b"]"


def _inner(part: bytes) -> bytes:
    """The events of a JSON event (``{...}``) or array (``[...]``) as the members of an array."""
    part = part.strip()
    return part[1:-1] if part[:1] == b"[" else part


def packable(value: bytes) -> bool:
    """Whether a record's value is a JSON event or array (what :meth:`Pack.value` can join)."""
    head = value.lstrip()[:1]
    return head in (b"[", b"{")


class Packer:
    """Puts each camera's event records of a chunk of messages into packs, in arrival order.

    A pack closes when the next part would take it past ``max_events`` or
    ``max_bytes``; the camera's next part opens a new one. :attr:`packs` is
    in the order the packs were opened, so a camera's packs are written in
    the order its messages came.
    """

    def __init__(self, max_bytes: int, max_events: int = PACK_EVENTS) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.packs: list[Pack] = []
        self._open: dict[bytes, Pack] = {}

    def add(self, key: bytes, value: bytes, events: int) -> Pack:
        """Put one message's events record (``events`` of them) in its camera's open pack, or a new one; that pack."""
        size, joinable = len(value) + 1, packable(value)
        open_ = self._open.get(key)
        if open_ is not None and joinable and open_.events + events <= self.max_events and open_.size + size <= self.max_bytes:
            pack = open_
        else:
            pack = Pack(key)
            self.packs.append(pack)
            if joinable:
                self._open[key] = pack
            else:  # not JSON (never, from the bridge): alone, as it came, and the camera's later ones after it
                self._open.pop(key, None)
        pack.parts.append(value)
        pack.events += events
        pack.size += size
        return pack
