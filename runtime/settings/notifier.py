"""Settings of the alert notifier (sinks/notifier.py): where alerts are posted, and how hard it tries."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.settings.base import DatabaseSettings, KafkaSettings, SupervisedSettings


class Webhook(BaseModel):
    """One receiver of alerts: a URL, the file holding its signing secret, and which alerts it wants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Names the webhook in SQL (alert_deliveries.webhook) and in its idempotency keys:
    # renaming one makes every later key new.
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str
    # The HMAC-SHA256 key (the file's bytes, surrounding whitespace stripped);
    # a file so the secret stays out of the config and the environment.
    secret_file: Path
    # Empty: every kind (offline, backlog, occupancy, clock_skew, reconcile,
    # video_down, tamper, overloaded, crowded, capacity), every site.
    kinds: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _http(self) -> Webhook:
        # A model validator, not a field one: its error names the webhook
        # (a field validator's would only say "webhooks.2.url").
        try:
            parts = urlsplit(self.url)
            port = parts.port  # raises for a port out of 0-65535 or not a number
        except ValueError as exc:
            raise ValueError(f"webhook {self.name}: bad URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook {self.name}: a webhook URL is http:// or https:// with a host")
        if port == 0:
            raise ValueError(f"webhook {self.name}: port 0 in the URL")
        if parts.username is not None or parts.password is not None:
            # It would be logged and sent as HTTP Basic auth on every post;
            # the signature (secret_file) is how a receiver knows the sender.
            raise ValueError(
                f"webhook {self.name}: credentials in the URL are refused (they would be logged and sent in clear); "
                "the receiver checks the signature made with secret_file instead"
            )
        return self

    def wants(self, kind: str, site: str) -> bool:
        """Does this webhook take alerts of ``kind`` at ``site``?"""
        return (not self.kinds or kind in self.kinds) and (not self.sites or site in self.sites)

    def secret(self) -> bytes:
        """The signing key, read from ``secret_file``."""
        try:
            key = self.secret_file.read_bytes().strip()
        except OSError as exc:
            raise ValueError(f"webhook {self.name}: cannot read secret file {self.secret_file}: {exc.strerror or exc}") from None
        if not key:
            raise ValueError(f"webhook {self.name}: secret file {self.secret_file} is empty")
        return key


class NotifierSettings(KafkaSettings, DatabaseSettings, SupervisedSettings):
    """The notifier: consumes the alerts topic and posts each opening and closing to the webhooks."""

    notifier_metrics_port: int | None = 9105
    # e.g. [{"name": "ops", "url": "https://hooks.example/fleetsight",
    #        "secret_file": "/run/secrets/ops_webhook", "kinds": ["offline"], "sites": ["depot-1"]}]
    webhooks: list[Webhook] = Field(default_factory=list)
    # One attempt's limit; a receiver slower than this counts as down.
    webhook_timeout_s: float = Field(10.0, gt=0)
    # Backoff between attempts at a receiver that fails: doubling up to this.
    webhook_retry_max_s: float = Field(60.0, gt=0)
    # A delivery still failing after this long is given up ("expired", logged).
    webhook_give_up_s: float = Field(3 * 24 * 3600.0, gt=0)
    # Alerts written to SQL without passing the alerts topic (the sink's
    # reconciler raises its own) are picked up from the alerts table: every
    # notifier_sweep_s, rows changed in the last notifier_sweep_window_s, at
    # least notifier_sweep_after_s old (the topic had its chance).
    notifier_sweep_s: float = Field(10.0, gt=0)
    notifier_sweep_window_s: float = Field(3600.0, gt=0)
    notifier_sweep_after_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _unique_names(self) -> NotifierSettings:
        names = [w.name for w in self.webhooks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"webhook names must differ; repeated: {', '.join(repeated)}")
        return self

    @cached_property
    def webhook_secrets(self) -> dict[str, bytes]:
        """Each webhook's key, read once; a missing or empty file stops the notifier at start with its name."""
        return {w.name: w.secret() for w in self.webhooks}
