"""Hostile MQTT payloads: what a broken, old or malicious publisher might send."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import msgpack
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from schemas.codec import load_schema

NOW = 1764072000000


def good_event(camera: str, seq: int, ts: int = NOW, cls: str = "person") -> dict[str, Any]:
    return {"v": 1, "camera_id": camera, "site": "fuzz", "seq": seq, "ts": ts, "type": "track.start",
            "data": {"track_id": seq, "class": cls, "confidence": 0.5}}


def _set(path: list[str], value: Any) -> Callable[[dict], dict]:
    def mutate(event: dict) -> dict:
        event = json.loads(json.dumps(event))
        target = event
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return event
    return mutate


def _drop(key: str) -> Callable[[dict], dict]:
    return lambda e: {k: v for k, v in e.items() if k != key}


# Each: (name, how to make the payload from a good event and the topic camera).
MUTATIONS: list[tuple[str, Callable[[dict, random.Random], bytes]]] = [
    ("random bytes", lambda e, r: bytes(r.getrandbits(8) for _ in range(r.randint(1, 300)))),
    ("truncated json", lambda e, r: json.dumps(e).encode()[: r.randint(1, len(json.dumps(e)) - 1)]),
    ("deeply nested", lambda e, r: b"[" * 50_000 + b"]" * 50_000),
    ("nested object", lambda e, r: json.dumps(_set(["data", "class"], {"a": {"b": {"c": [1, 2, [3]]}}})(e)).encode()),
    ("huge payload", lambda e, r: json.dumps(_set(["data", "class"], "x" * 400_000)(e)).encode()),
    ("huge batch", lambda e, r: json.dumps([e] * 1500).encode()),
    ("unknown version", lambda e, r: json.dumps(_set(["v"], r.choice([0, 2, 99, "1", None, 1.5]))(e)).encode()),
    ("wrong type: seq", lambda e, r: json.dumps(_set(["seq"], r.choice(["7", -1, 0, 1.5, [], True]))(e)).encode()),
    ("wrong type: ts", lambda e, r: json.dumps(_set(["ts"], r.choice(["now", 1.5, {}, 12]))(e)).encode()),
    ("missing field", lambda e, r: json.dumps(_drop(r.choice(["v", "camera_id", "site", "seq", "ts", "type", "data"]))(e)).encode()),
    ("unknown type", lambda e, r: json.dumps(_set(["type"], "teleport")(e)).encode()),
    ("extra field", lambda e, r: json.dumps({**e, "admin": True}).encode()),
    ("far future", lambda e, r: json.dumps(_set(["ts"], NOW + r.randint(10, 10_000) * 3600_000)(e)).encode()),
    ("other camera", lambda e, r: json.dumps(_set(["camera_id"], "someone-else")(e)).encode()),
    ("bad camera id", lambda e, r: json.dumps(_set(["camera_id"], "../../etc")(e)).encode()),
    ("scalar", lambda e, r: json.dumps(r.choice([1, "x", None, True])).encode()),
    ("msgpack garbage", lambda e, r: msgpack.packb({"v": 1, "camera_id": 5})),
    ("empty", lambda e, r: b""),
    ("nul bytes", lambda e, r: b"\x00" * r.randint(1, 50)),
]


def inline(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with its local $refs replaced by what they point at."""
    if isinstance(node, dict):
        if "$ref" in node:
            return inline(defs[node["$ref"].rsplit("/", 1)[1]], defs)
        return {k: inline(v, defs) for k, v in node.items() if k not in ("$id", "$schema", "$defs", "examples", "allOf")}
    if isinstance(node, list):
        return [inline(v, defs) for v in node]
    return node


def event_strategy(types: tuple[str, ...] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Events of every type (or of ``types``), straight from the contract (one schema per type)."""
    schema = load_schema("event")
    defs = schema["$defs"]
    envelope = inline(schema, defs)
    per_type = []
    for branch in schema["allOf"]:
        if types is not None and branch["if"]["properties"]["type"]["const"] not in types:
            continue
        typed = json.loads(json.dumps(envelope))
        typed["properties"]["type"] = {"const": branch["if"]["properties"]["type"]["const"]}
        typed["properties"]["data"] = inline(branch["then"]["properties"]["data"], defs)
        per_type.append(from_schema(typed))
    return st.one_of(per_type)
