"""Home Assistant MQTT discovery for any node kind: builds retained config payloads that map
the contract's topics onto `event`, `binary_sensor` and `sensor` entities, and republishes
them when Home Assistant comes online.

Builds and publishes configs only; never publishes to contract topics or changes what a
node sends (Home Assistant reads our messages through templates)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from edge_agent import __version__
from edge_agent.commands import BUTTONS
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, int, bool], object]
"""(topic, payload, qos, retain), e.g. a wrapper around paho's Client.publish."""

MANUFACTURER = "SafeCity"
MODELS = {"camera": "SafeCity camera node", "gas": "SafeCity gas board",
          "flood": "SafeCity flood board", "vibration": "SafeCity vibration board"}

KIND_EVENTS: dict[str, tuple[str, ...]] = {
    "camera": ("intrusion", "line_crossing", "loitering", "crowding", "fall", "tamper", "sos",
               "tamper_switch"),
    "gas": ("gas", "sensor_fault"),
    "flood": ("flood", "sensor_fault"),
    "vibration": ("vibration", "sensor_fault"),
}


@dataclass(frozen=True)
class Latched:
    """A state with start/end phases: a binary_sensor, ON from start until end."""

    name: str
    device_class: str
    off_delay_s: int | None = None
    """For boards that may report the type as `instant`: HA turns it off after this."""


@dataclass(frozen=True)
class OneShot:
    """An instant detection: an `event` entity."""

    name: str
    device_class: str | None = None
    event_type: str = "value_json.type"
    """Jinja expression giving the event_type; one of event_types."""
    event_types: tuple[str, ...] | None = None
    """None: the contract type itself is the only event_type."""


ENTITIES: dict[str, Latched | OneShot] = {
    "intrusion": Latched("Intrusion", "occupancy"),
    "loitering": Latched("Loitering", "occupancy"),
    "crowding": Latched("Crowding", "safety"),
    "tamper": Latched("Camera tamper", "tamper"),
    "tamper_switch": Latched("Enclosure tamper", "tamper"),
    "gas": Latched("Gas", "gas"),
    "flood": Latched("Flood", "moisture"),
    "vibration": Latched("Vibration", "vibration", off_delay_s=30),
    "line_crossing": OneShot("Line crossing", "motion"),
    "fall": OneShot("Fall"),
    "sos": OneShot("SOS", "button"),
    "sensor_fault": OneShot("Sensor fault", event_type="value_json.details.fault",
                            event_types=("open", "short", "stuck", "floating", "i2c", "range")),
}


BUTTON_LOOK: dict[str, tuple[str, str | None, str | None]] = {
    "snapshot": ("Take snapshot", None, None),
    "self_test": ("Self-test", "diagnostic", None),
    "restart": ("Restart", "config", "restart"),
}
"""Name, entity_category and device_class of each button command."""


@dataclass(frozen=True)
class Reading:
    """A telemetry metric shown as a `sensor`."""

    key: str
    name: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = "measurement"
    diagnostic: bool = False


CAMERA_READINGS = (
    Reading("fps", "Frame rate", "fps", diagnostic=True),
    Reading("inference_ms", "Inference time", "ms", "duration", diagnostic=True),
    Reading("dropped_frames", "Dropped frames", state_class="total_increasing",
            diagnostic=True),
    Reading("events", "Events", state_class="total_increasing"),
    Reading("cpu_temp_c", "CPU temperature", "°C", "temperature", diagnostic=True),
    Reading("rss_bytes", "Memory", "B", "data_size", diagnostic=True),
)
BOARD_READINGS = (
    Reading("rssi_dbm", "WiFi signal", "dBm", "signal_strength", diagnostic=True),
    Reading("free_heap_bytes", "Free heap", "B", "data_size", diagnostic=True),
)
KIND_READINGS: dict[str, tuple[Reading, ...]] = {
    "camera": CAMERA_READINGS,
    "gas": (Reading("gas_ppm", "Gas concentration", "ppm"), *BOARD_READINGS),
    "flood": (Reading("level_cm", "Water level", "cm", "distance"), *BOARD_READINGS),
    "vibration": BOARD_READINGS,
}
COMMON_READINGS = (
    Reading("spool_depth", "Spooled messages", diagnostic=True),
)


def _event_template(entity: OneShot) -> str:
    # Only the first message of an event fires it; update/end messages render {} which
    # Home Assistant ignores.
    return ("{% if value_json.phase in ['instant', 'start'] %}{{ {"
            f"'event_type': {entity.event_type}, "
            "'event_id': value_json.event_id, 'severity': value_json.severity, "
            "'details': value_json.details, "
            "'historical': value_json.historical | default(false)"
            "} | to_json }}{% else %}{}{% endif %}")


def discovery_messages(topics: Topics, kind: str, *, prefix: str = "homeassistant",
                       event_types: Iterable[str] | None = None,
                       readings: Iterable[str] | None = None,
                       zones: dict[str, list[str]] | None = None,
                       version: str = __version__) -> list[tuple[str, bytes]]:
    """Every (topic, payload) for one node, topics `<prefix>/<component>/<node>/<object>/config`.

    `event_types`/`readings` narrow the entities to what the node really produces (e.g. the
    configured rules); by default everything its kind can send. `zones` (a camera node's
    zone names, each with the labels its intrusion rules watch, maybe none) adds an
    occupancy count `sensor` per zone from the node's zone messages; the intrusion
    `binary_sensor` then becomes one per watched zone, on while any watched object is in it
    (an intrusion event ends per track: following events, the sensor went off when the
    first of several people left)."""
    if kind not in KIND_EVENTS:
        raise ValueError(f"discovery: unknown node kind {kind!r} (one of {sorted(KIND_EVENTS)})")
    types = list(KIND_EVENTS[kind] if event_types is None else event_types)
    unknown = [t for t in types if t not in ENTITIES]
    if unknown:
        raise ValueError(f"discovery: no entity mapping for event types {unknown}")
    uid = f"safecity_{topics.site}_{topics.node}"
    common: dict[str, Any] = {
        "availability": [{
            "topic": topics.status,
            # safe_mode: the board answers but reads no sensor, so its entities are down
            "value_template": ("{{ 'offline' if value_json.state in ['offline', 'safe_mode']"
                               " else 'online' }}"),
            "payload_available": "online",
            "payload_not_available": "offline",
        }],
        "device": {
            "identifiers": [uid],
            "name": f"{topics.site} {topics.node}",
            "model": MODELS[kind],
            "manufacturer": MANUFACTURER,
            "sw_version": version,
            "suggested_area": topics.site,
        },
        "origin": {"name": "safecity-edge", "sw_version": version},
    }
    out: list[tuple[str, bytes]] = []

    def add(component: str, object_id: str, config: dict[str, Any]) -> None:
        doc = {"unique_id": f"{uid}_{object_id}", **config, **common}
        topic = f"{prefix}/{component}/{topics.node}/{object_id}/config"
        out.append((topic, json.dumps(doc, separators=(",", ":"),
                                      ensure_ascii=False).encode()))

    for name, labels in (zones or {}).items():
        zone_topic = topics.zone(name)
        add("sensor", f"zone_{name}_count", {
            "name": f"{name} occupancy", "state_topic": zone_topic, "qos": 1,
            "state_class": "measurement", "value_template": "{{ value_json.count }}",
            "json_attributes_topic": zone_topic,
            "json_attributes_template": "{{ value_json.labels | to_json }}",
        })
        if labels and "intrusion" in types:
            watched = " + ".join(f"value_json.labels.get({json.dumps(label)}, 0)"
                                 for label in labels)
            add("binary_sensor", f"intrusion_{name}", {
                "name": f"Intrusion {name}", "state_topic": zone_topic, "qos": 1,
                "device_class": "occupancy",
                "value_template": f"{{{{ 'ON' if {watched} > 0 else 'OFF' }}}}",
                "payload_on": "ON", "payload_off": "OFF",
                "json_attributes_topic": zone_topic,
                "json_attributes_template": "{{ value_json.labels | to_json }}",
            })
    zoned = any(labels for labels in (zones or {}).values())
    for event_type in types:
        if event_type == "intrusion" and zoned:
            continue  # per zone, above
        entity = ENTITIES[event_type]
        state = topics.event(event_type)
        if isinstance(entity, Latched):
            cfg: dict[str, Any] = {
                "name": entity.name, "state_topic": state, "qos": 1,
                "device_class": entity.device_class,
                "value_template": "{{ 'OFF' if value_json.phase == 'end' else 'ON' }}",
                "payload_on": "ON", "payload_off": "OFF",
                "json_attributes_topic": state,
                "json_attributes_template": "{{ value_json.details | to_json }}",
            }
            if entity.off_delay_s is not None:
                cfg["off_delay"] = entity.off_delay_s
            add("binary_sensor", event_type, cfg)
        else:
            cfg = {"name": entity.name, "state_topic": state, "qos": 1,
                   "event_types": list(entity.event_types or (event_type,)),
                   "value_template": _event_template(entity)}
            if entity.device_class:
                cfg["device_class"] = entity.device_class
            add("event", event_type, cfg)

    wanted = None if readings is None else set(readings)
    for r in (*KIND_READINGS[kind], *COMMON_READINGS):
        if wanted is not None and r.key not in wanted:
            continue
        cfg = {"name": r.name, "state_topic": topics.telemetry,
               "value_template": f"{{{{ value_json.metrics.get('{r.key}') }}}}"}
        for field, value in (("unit_of_measurement", r.unit), ("device_class", r.device_class),
                             ("state_class", r.state_class)):
            if value is not None:
                cfg[field] = value
        if r.diagnostic:
            cfg["entity_category"] = "diagnostic"
        add("sensor", r.key, cfg)
    if kind == "camera":
        # The latest event snapshot, as the node publishes it (redacted when its privacy
        # settings say so: docs/privacy.md); HA shows the newest image on the topic.
        add("camera", "latest_snapshot", {"name": "Event snapshot", "topic": topics.snapshot("+")})
        for command in BUTTONS:
            name, category, device_class = BUTTON_LOOK[command]
            cfg = {"name": name, "command_topic": topics.button(command), "qos": 1,
                   "entity_category": category,
                   # a fresh command id per press: nodes answer each id once
                   "command_template": ('{"id": "ha-{{ (now().timestamp() * 1000) | int }}",'
                                        f' "cmd": "{command}"}}'),
                   "retain": False}
            if device_class:
                cfg["device_class"] = device_class
            add("button", command, cfg)
    add("sensor", "uptime", {
        "name": "Uptime", "state_topic": topics.telemetry, "unit_of_measurement": "s",
        "device_class": "duration", "state_class": "measurement",
        "entity_category": "diagnostic", "value_template": "{{ value_json.uptime_s }}",
        "json_attributes_topic": topics.telemetry,
        "json_attributes_template": "{{ {'boot': value_json.boot} | to_json }}",
    })
    return out


def removal_messages(messages: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Empty retained payloads: Home Assistant removes those entities (decommissioning)."""
    return [(topic, b"") for topic, _ in messages]


class Discovery:
    """Publishes the configs on connect and again whenever `<prefix>/status` says online."""

    def __init__(self, messages: list[tuple[str, bytes]], publish: Publish,
                 prefix: str = "homeassistant") -> None:
        self.messages = messages
        self._publish = publish
        self.status_topic = f"{prefix}/status"
        self.rounds = 0

    def publish_all(self) -> None:
        for topic, payload in self.messages:
            self._publish(topic, payload, 1, True)
        self.rounds += 1
        log.info("event=ha_discovery_published entities=%d round=%d", len(self.messages),
                 self.rounds)

    def on_message(self, topic: str, payload: bytes) -> bool:
        """True if it republished (Home Assistant's birth message)."""
        if topic == self.status_topic and payload.strip() == b"online":
            self.publish_all()
            return True
        return False

    # -- paho glue: the uplink calls `on_connect(client)` from its own on_connect ------------
    def attach(self, client: Any) -> None:
        """Route `<prefix>/status` to this helper; paho calls topic callbacks instead of the
        client's on_message for matching topics, so the uplink's handler is untouched."""
        self._publish = _paho_publish(client)
        client.message_callback_add(
            self.status_topic,
            lambda _c, _u, msg: self.on_message(msg.topic, bytes(msg.payload)))

    def on_connect(self, client: Any) -> None:
        """Call from the client's on_connect (network thread; only queues publishes)."""
        client.subscribe(self.status_topic, qos=1)
        self.publish_all()


def _paho_publish(client: Any) -> Publish:
    def publish(topic: str, payload: bytes, qos: int, retain: bool) -> object:
        return client.publish(topic, payload, qos=qos, retain=retain)
    return publish


class DiscoveryError(Exception):
    """Why discovery could not be published, in words a technician can act on."""


def publish_once(host: str, port: int, msgs: list[tuple[str, bytes]], *,
                 username: str | None = None, password: str | None = None,
                 ca_file: str | None = None, timeout_s: float = 10.0) -> int:
    """Publish retained discovery for a node that cannot do it itself (a sensor board: its
    64K heap has no room for the configs), e.g. from flash.sh at install time. The broker
    keeps them retained, so Home Assistant finds them whenever it (re)starts. `ca_file`:
    connect over TLS, verifying the broker's certificate against it.

    MQTT 5, so the broker says why it refuses a login or a publish (its ACL). Returns how
    many were acknowledged; raises DiscoveryError naming the cause when none can be."""
    import ssl
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.reasoncodes import ReasonCode

    from edge_agent.uplink.connect import connect_cause

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    if ca_file is not None:
        try:
            client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as exc:
            raise DiscoveryError(f"CA file {ca_file}: {connect_cause(exc)}") from None
    done = threading.Condition()
    connack: list[ReasonCode] = []
    pubacks: dict[int, ReasonCode] = {}

    def on_connect(c: mqtt.Client, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        with done:
            connack.append(rc)
            done.notify_all()

    def on_publish(c: mqtt.Client, u: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        with done:
            pubacks[mid] = rc
            done.notify_all()

    client.on_connect = on_connect
    client.on_publish = on_publish
    where = f"broker {host}:{port}{' (TLS)' if ca_file else ''}"
    try:
        client.connect(host, port)
    except (OSError, ssl.SSLError) as exc:
        raise DiscoveryError(f"{where}: {connect_cause(exc)}") from None
    client.loop_start()
    try:
        with done:
            if not done.wait_for(lambda: connack, timeout_s):
                raise DiscoveryError(f"{where}: no answer to the login within {timeout_s:g} s")
        if connack[0].is_failure:
            raise DiscoveryError(f"{where}: login refused: {connack[0]}")
        mids = [client.publish(t, p, qos=1, retain=True).mid for t, p in msgs]
        with done:
            done.wait_for(lambda: all(m in pubacks for m in mids), timeout_s)
        refused = [(t, pubacks[m]) for (t, _), m in zip(msgs, mids, strict=True)
                   if m in pubacks and pubacks[m].is_failure]
        ok = sum(1 for m in mids if m in pubacks and not pubacks[m].is_failure)
        if refused and not ok:
            raise DiscoveryError(f"{where}: every config refused, e.g. {refused[0][0]}: "
                                 f"{refused[0][1]} (does the ACL let user {username!r} write "
                                 "homeassistant/+/<its node>/+/config?)")
        for topic, rc in refused:
            log.warning("event=ha_discovery_refused topic=%s reason=%s", topic, rc)
        return ok
    finally:
        client.disconnect()
        client.loop_stop()
