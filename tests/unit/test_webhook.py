"""The alert webhook's body and signature (schemas/webhook.py)."""

from __future__ import annotations

import hashlib
import hmac
import json

from schemas.webhook import body, idempotency_key, sign, verify

ALERT = {
    "alert_id": "cam-door|occupancy|till|1764756000000", "camera_id": "cam-door", "site": "shop-1", "kind": "occupancy",
    "subject": "till", "state": "open", "opened_at": 1764756000000, "closed_at": None, "detail": "9 inside (limit 8)", "version": 1,
}


def test_the_body_is_stable_json_with_iso_times() -> None:
    doc = json.loads(body(ALERT))
    assert doc == {
        "v": 1, "alert_id": ALERT["alert_id"], "state": "open", "kind": "occupancy", "subject": "till", "camera_id": "cam-door",
        "site": "shop-1", "opened_at": "2025-12-03T10:00:00Z", "closed_at": None, "detail": "9 inside (limit 8)",
    }
    assert body(dict(reversed(list(ALERT.items())))) == body(ALERT)  # the same bytes however the row was built


def test_a_receiver_can_check_the_signature_with_plain_hmac() -> None:
    payload = body(ALERT)
    header = sign(b"s3cret", payload, at=1764756005)
    t, v1 = (part.split("=", 1)[1] for part in header.split(","))
    assert v1 == hmac.new(b"s3cret", f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    assert verify(b"s3cret", header, payload, now=1764756010)


def test_a_changed_body_a_wrong_secret_or_an_old_request_is_refused() -> None:
    payload = body(ALERT)
    header = sign(b"s3cret", payload, at=1764756005)
    assert not verify(b"s3cret", header, payload.replace(b"9 inside", b"1 inside"), now=1764756010)
    assert not verify(b"other", header, payload, now=1764756010)
    assert not verify(b"s3cret", header, payload, now=1764756005 + 301)  # replayed later than the tolerance
    assert not verify(b"s3cret", "v1=abc", payload) and not verify(b"s3cret", "garbage", payload)


def test_one_key_per_alert_state_and_webhook() -> None:
    key = idempotency_key(ALERT["alert_id"], "open", "ops-chat")
    assert key == idempotency_key(ALERT["alert_id"], "open", "ops-chat")
    assert len({key, idempotency_key(ALERT["alert_id"], "closed", "ops-chat"), idempotency_key(ALERT["alert_id"], "open", "pager")}) == 3


def test_verify_reads_headers_as_receivers_write_them() -> None:
    payload = body(ALERT)
    good = sign(b"s3cret", payload, at=1764756005)
    t, v1 = good.split(",")
    assert verify(b"s3cret", f"{t}, {v1}", payload, now=1764756010)  # a space after the comma
    other = "v1=" + "0" * 64
    assert verify(b"s3cret", f"{t},{v1},{other}", payload, now=1764756010)  # the valid one first
    assert verify(b"s3cret", f"{t},{other},{v1}", payload, now=1764756010)  # or last
    assert not verify(b"s3cret", f"{t},{other}", payload, now=1764756010)
    assert not verify(b"s3cret", t, payload, now=1764756010)  # no signature at all
