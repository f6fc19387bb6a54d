"""The body and signature of an alert webhook: the contract with whoever receives them.

The notifier (``sinks/notifier.py``) posts each alert's opening and closing
to the configured URLs with this body and these headers; a receiver checks
the signature with ``verify`` (or its own few lines of HMAC) and drops a
repeat by ``Idempotency-Key``: delivery is at least once.

- Body: JSON, keys sorted, UTF-8; times are ISO 8601 UTC.
- ``X-FleetSight-Signature: t=<unix seconds>,v1=<hex>``: HMAC-SHA256 with
  the webhook's secret over ``<t>.<body>``. The time is signed too, so a
  captured request cannot be replayed later than the receiver's tolerance
  (Stripe's scheme: receivers may know it).
- ``Idempotency-Key``: the same for every attempt at one alert's opening (or
  closing) to one webhook, different for anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

VERSION = 1
SIGNATURE_HEADER = "X-FleetSight-Signature"
KEY_HEADER = "Idempotency-Key"


def _iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z") if ms else None


def body(alert: Mapping[str, Any]) -> bytes:
    """The webhook body of one row of the ``alerts`` table (``schemas.aggregates.ALERTS``; times in ms)."""
    doc = {
        "v": VERSION, "alert_id": alert["alert_id"], "state": alert["state"], "kind": alert["kind"],
        "subject": alert["subject"], "camera_id": alert["camera_id"], "site": alert["site"],
        "opened_at": _iso(alert["opened_at"]), "closed_at": _iso(alert.get("closed_at")), "detail": alert["detail"],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def idempotency_key(alert_id: str, state: str, webhook: str) -> str:
    """Stable across attempts and restarts; one per alert, state and webhook."""
    return hashlib.sha256(f"{alert_id}\n{state}\n{webhook}".encode()).hexdigest()[:32]


def sign(secret: bytes, payload: bytes, at: int | None = None) -> str:
    """The signature header's value for ``payload`` sent at ``at`` (unix seconds; now by default)."""
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret, f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def verify(secret: bytes, header: str, payload: bytes, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """Is ``header`` a signature of ``payload`` with ``secret``, made within ``tolerance_s`` of ``now``?

    Lenient in what it reads, as receivers' own parsers are: spaces around the
    comma-separated fields, and several ``v1`` values (a sender rolling its
    secret signs with both), any one of which may match.
    """
    at: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if name == "t":
            try:
                at = int(value.strip())
            except ValueError:
                return False
        elif name == "v1":
            candidates.append(value.strip())
    if at is None or not candidates:
        return False
    now = time.time() if now is None else now
    if abs(now - at) > tolerance_s:
        return False
    expected = hmac.new(secret, f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    # Every candidate is compared (no early exit) so the time taken says nothing about which matched.
    return any([hmac.compare_digest(expected, candidate) for candidate in candidates])
