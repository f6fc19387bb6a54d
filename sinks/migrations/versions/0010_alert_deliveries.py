"""alert notifications: what was posted to which webhook, and how it went

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

``alert_deliveries`` holds one row per alert change (open, closed) and
webhook, kept by the notifier (sinks/notifier.py). ``alerts`` gains an index
on ``updated_at`` for the notifier's sweep of alerts that reach SQL without
passing the alerts topic.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_deliveries",
        sa.Column("delivery_id", sa.BigInteger, sa.Identity(), primary_key=True,
                  comment="order of queueing: each webhook gets its deliveries in this order"),
        sa.Column("webhook", sa.String(64), nullable=False, comment="the webhook's name in the notifier's settings"),
        sa.Column("alert_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(8), nullable=False, comment="open or closed: which change of the alert this tells"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False, comment="the Idempotency-Key header: the same on every attempt"),
        sa.Column("body", sa.Text, nullable=False, comment="the JSON body, byte for byte what every attempt posts"),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending",
                  comment="pending, delivered (2xx), rejected (a 4xx other than 408/429: not retried) or expired (given up)"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text, comment="what the last failed attempt got: HTTP status or connection error"),
        sa.Column("response_status", sa.Integer, comment="HTTP status of the last answer"),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        comment="Alert notifications: one row per alert change and webhook (sinks/notifier.py).",
    )
    # Alert first: the notifier's sweep looks deliveries up by alert and state, whatever the webhook.
    op.create_index("ux_alert_deliveries_alert_state_webhook", "alert_deliveries", ["alert_id", "state", "webhook"], unique=True)
    op.create_index("ix_alert_deliveries_pending", "alert_deliveries", ["webhook", "delivery_id"],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_alerts_updated_at", "alerts", ["updated_at"])
    op.execute("GRANT SELECT, INSERT, UPDATE ON alert_deliveries TO fleetsight_writer")
    op.execute("GRANT SELECT ON alert_deliveries TO fleetsight_analyst")


def downgrade() -> None:
    op.drop_index("ix_alerts_updated_at", table_name="alerts")
    op.drop_table("alert_deliveries")
