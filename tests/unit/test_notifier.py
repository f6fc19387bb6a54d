"""The notifier's pure parts: what an answer means, who gets which alert, and a webhook config that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from runtime.settings import NotifierSettings, Webhook
from schemas import webhook as contract
from sinks.notifier import deliveries, outcome

ALERT = {
    "alert_id": "cam-1|occupancy|till|1", "camera_id": "cam-1", "site": "depot-1", "kind": "occupancy", "subject": "till",
    "state": "open", "opened_at": 1_796_000_000_000, "closed_at": None, "detail": "9 people in till for 2 min (limit 8)",
}


@pytest.mark.parametrize(("status", "want"), [
    (200, "delivered"), (202, "delivered"), (204, "delivered"),
    (408, "retry"), (425, "retry"), (429, "retry"), (500, "retry"), (502, "retry"), (503, "retry"),
    (301, "rejected"), (400, "rejected"), (401, "rejected"), (404, "rejected"), (422, "rejected"),
])
def test_an_answer_means_done_try_again_or_refused(status: int, want: str) -> None:
    assert outcome(status) == want


def hook(name: str, **over: object) -> Webhook:
    return Webhook.model_validate({"name": name, "url": f"https://hooks.example/{name}", "secret_file": "/nonexistent", **over})


def test_an_alert_goes_to_the_webhooks_whose_kinds_and_sites_take_it() -> None:
    hooks = [hook("all"), hook("occupancy", kinds=["occupancy"]), hook("other-site", sites=["depot-2"]),
             hook("offline", kinds=["offline"], sites=["depot-1"])]
    got = deliveries(ALERT, hooks)
    assert [d.webhook for d in got] == ["all", "occupancy"]
    assert {d.body for d in got} == {contract.body(ALERT)}  # the same bytes for every webhook and attempt
    assert got[0].idempotency_key != got[1].idempotency_key  # but each webhook its own key
    assert got[0].idempotency_key == contract.idempotency_key(ALERT["alert_id"], "open", "all")
    closed = deliveries({**ALERT, "state": "closed", "closed_at": ALERT["opened_at"] + 60_000}, hooks)
    # A closing brings its opening along, queued first (the queue keeps an opening already there).
    assert [(d.webhook, d.state) for d in closed] == [("all", "open"), ("occupancy", "open"), ("all", "closed"), ("occupancy", "closed")]
    assert closed[0] == got[0]
    assert closed[2].idempotency_key != got[0].idempotency_key


def test_a_wrong_webhook_config_is_refused_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="webhook ftp: a webhook URL is http:// or https://"):
        hook("ftp", url="ftp://hooks.example/x")
    with pytest.raises(ValidationError, match="webhook big: bad URL .*out of range"):
        hook("big", url="https://hooks.example:99999/x")
    with pytest.raises(ValidationError, match="webhook zero: port 0"):
        hook("zero", url="https://hooks.example:0/x")
    with pytest.raises(ValidationError, match="webhook creds: credentials in the URL are refused") as refused:
        hook("creds", url="http://user:hunter2@hooks.example/x")
    assert "hunter2" not in str(refused.value)  # not even in the error that is logged
    with pytest.raises(ValidationError, match="String should match pattern"):
        hook("has space")
    with pytest.raises(ValidationError, match="repeated: ops"):
        NotifierSettings(webhooks=[hook("ops"), hook("ops")])
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="ops: secret file .* is empty"):
        _ = NotifierSettings(webhooks=[hook("ops", secret_file=str(empty))]).webhook_secrets
    with pytest.raises(ValueError, match="webhook ops: cannot read secret file .*missing"):
        _ = NotifierSettings(webhooks=[hook("ops", secret_file=str(tmp_path / "missing"))]).webhook_secrets
    kept = tmp_path / "ops"
    kept.write_text("  s3cret \n")
    assert NotifierSettings(webhooks=[hook("ops", secret_file=str(kept))]).webhook_secrets == {"ops": b"s3cret"}
