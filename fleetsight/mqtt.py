"""Build a paho-mqtt client from the settings (credentials, TLS, reconnects)."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from fleetsight.settings import Settings


def make_client(
    settings: Settings,
    client_id: str,
    *,
    persistent: bool,
    manual_ack: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> mqtt.Client:
    """A paho client for ``settings.mqtt_url``; call ``connect_async`` next.

    ``persistent`` keeps the broker-side session (subscriptions and unacked
    QoS 1 messages) across disconnects, which is what the bridge needs.
    """
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=not persistent,
        manual_ack=manual_ack,
    )
    address = settings.mqtt
    if username is None:
        username, password = settings.mqtt_credentials()
    if username:
        client.username_pw_set(username, password)
    if address.tls:
        # Verifies the broker's certificate and host name.
        client.tls_set(ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client
