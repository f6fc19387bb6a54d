"""Build a paho-mqtt client from the settings (credentials, TLS, reconnects)."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt

from runtime.settings import MqttSettings


def make_client(
    settings: MqttSettings,
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


def publish_confirmed(client: mqtt.Client, items: list[tuple[str, bytes]], *, retain: bool = False, timeout: float = 120.0) -> None:
    """Publish (topic, payload) pairs at QoS 1 on a running client and return
    once the broker has acknowledged every one; TimeoutError otherwise."""
    infos = [client.publish(topic, payload, qos=1, retain=retain) for topic, payload in items]
    deadline = time.monotonic() + timeout
    for info in infos:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        if not info.is_published():
            raise TimeoutError(f"the broker did not acknowledge {len(infos)} messages within {timeout:.0f} s")


def read_retained(settings: MqttSettings, pattern: str, timeout: float = 10.0) -> dict[str, bytes]:
    """The retained messages under ``pattern`` (topic -> payload), read with
    ``settings``' login; TimeoutError if the broker does not answer."""
    found: dict[str, bytes] = {}
    done = threading.Event()
    marker = f"{settings.mqtt_topic_root}/_retained-end/{uuid.uuid4().hex}"

    def on_connect(client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        client.subscribe([(pattern, 1), (marker, 1)])

    def on_subscribe(client: mqtt.Client, *args: object) -> None:
        # Retained messages come before anything published after the SUBACK:
        # once our own marker is back, every one of them has arrived.
        client.publish(marker, b"end", qos=1)

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == marker:
            done.set()
        elif msg.retain and msg.payload:
            found[msg.topic] = bytes(msg.payload)

    client = make_client(settings, f"{settings.mqtt_topic_root}-retained-{uuid.uuid4().hex[:6]}", persistent=False)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect_async(settings.mqtt.host, settings.mqtt.port)
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise TimeoutError(f"the broker at {settings.mqtt.host}:{settings.mqtt.port} did not answer in {timeout:.0f} s")
    finally:
        client.disconnect()
        client.loop_stop()
    return found


def login_accepted(settings: MqttSettings, username: str, password: str, timeout: float = 2.0) -> bool:
    """True when the broker accepts this login now (connects, then disconnects)."""
    client = make_client(settings, f"{settings.mqtt_topic_root}-login-{uuid.uuid4().hex[:6]}", persistent=False,
                         username=username, password=password)
    try:
        client.connect(settings.mqtt.host, settings.mqtt.port, keepalive=10)
        deadline = time.monotonic() + timeout
        while not client.is_connected() and time.monotonic() < deadline:
            if client.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                return False  # refused: the broker closed the connection
        return client.is_connected()
    except OSError:
        return False
    finally:
        client.disconnect()
