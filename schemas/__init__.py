"""The event contract shared by every stage: JSON Schema files and the codec."""

from schemas.codec import SCHEMA_VERSION, Event, EventError, Reason, decode, encode

__all__ = ["SCHEMA_VERSION", "Event", "EventError", "Reason", "decode", "encode"]
