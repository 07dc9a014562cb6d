"""How a node connects: its credentials and TLS on a paho client, what a failed attempt
says, and whether a broker answers at all."""

from __future__ import annotations

import contextlib
import ssl
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import BrokerAddress, MqttConfig


def authenticate(client: mqtt.Client, cfg: MqttConfig) -> None:
    """The node's credentials and TLS on a paho client, as the node connects (the uplink,
    and `edge-agent probe`). Raises OSError or ValueError for TLS files that do not load."""
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.tls is not None:
        client.tls_set(ca_certs=str(cfg.tls.ca_file),
                       certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                       keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
                       cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(cfg.tls.insecure)


def connect_cause(exc: BaseException | None) -> str:
    """What a failed connection attempt says: the OS's or TLS's reason, not a traceback."""
    if exc is None:
        return "unknown"
    text = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    text = text or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def mqtt_answer(cfg: MqttConfig, broker: BrokerAddress, client_id: str,
                timeout: float) -> str | None:
    """None when `broker` accepted a clean-session CONNECT within `timeout` seconds;
    otherwise why not, in words a technician can act on. A TCP look is not enough: a hung
    broker's kernel still completes the handshake (a node that moved back on that alone sat
    offline until paho's keepalive gave up on the CONNACK, 31 s with keepalive 30). Never
    publishes or subscribes; the client id must not be the node's own (a broker would hand
    it the node's session)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=True)
    client.connect_timeout = timeout
    answer: list[str] = []

    def on_connect(c: mqtt.Client, userdata: object, flags: object, reason: object,
                   props: object = None) -> None:
        answer.append(str(reason))

    client.on_connect = on_connect
    deadline = time.monotonic() + timeout
    try:
        authenticate(client, cfg)
        client.connect(broker.host, broker.port, keepalive=cfg.keepalive_s)
        while not answer and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                return "closed by the broker before it answered"
    except (OSError, ValueError) as exc:
        return connect_cause(exc)
    finally:
        if answer:
            client.disconnect()
            with contextlib.suppress(Exception):
                client.loop_write()
        sock = client.socket()
        if sock is not None:
            sock.close()
    if not answer:
        return f"no answer within {timeout:g} s"
    return None if answer[0] == "Success" else f"refused by the broker: {answer[0]}"
