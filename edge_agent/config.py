"""Typed node configuration, loaded from one TOML file and validated at the edge.

Every error names the field path and the reason; nothing downstream re-validates."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_agent.geometry import Point

SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
Severity = Literal["info", "warning", "critical"]


class ConfigError(ValueError):
    """A config that cannot be used; `errors` holds one `path: reason` line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _segment(value: str) -> str:
    if not SEGMENT.match(value):
        raise ValueError(
            "must be 1-64 characters of letters, digits, '-' or '_', starting with a letter "
            "or digit (it is used as an MQTT topic segment)"
        )
    return value


class NodeConfig(_Model):
    id: str
    site: str
    state_dir: Path = Path("/var/lib/safecity-edge")
    """Boot counter and spool live here; the only directory the service may write."""

    _check_id = field_validator("id", "site")(_segment)


class TlsConfig(_Model):
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


def _reconnect_order(model: Any) -> Any:
    if model.reconnect_min_s > model.reconnect_max_s:
        raise ValueError(f"reconnect_min_s ({model.reconnect_min_s}) is above reconnect_max_s "
                         f"({model.reconnect_max_s})")
    return model


def _area(points: list[Point]) -> float:
    """Shoelace area: zero for points on one line, however many."""
    n = len(points)
    return abs(sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0]
                   * points[i][1] for i in range(n))) / 2.0


NATS_MAX_PAYLOAD = 1024 * 1024
"""NATS's default `max_payload`; a larger publish closes the connection."""
PAYLOAD_HEADROOM = 1024
"""Bytes a snapshot leaves under the broker's limit for its topic and the broker's headers."""


class BrokerAddress(_Model):
    """One broker of the list a node fails over along."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(1883, ge=1, le=65535)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    brokers: list[BrokerAddress] = Field([], max_length=16)
    """Brokers in order of preference (members of one cluster, which keeps the node's
    session across a move). A lost connection moves to the next; the first choice is taken
    back when it answers again. Empty: `host` and `port` alone."""
    failover_jitter_s: float = Field(2.0, ge=0, le=300)
    """A lost connection tries the next broker after a random 0..this many seconds, so the
    nodes of a member that died do not all reconnect in the same second."""
    failback_s: float = Field(300.0, ge=1)
    """While on another broker, how often (jittered) the node checks whether its first
    choice answers again and moves back to it."""
    connect_timeout_s: float = Field(10.0, gt=0, le=120)
    """An attempt with no CONNACK this long after the TCP connection failed: the node tries
    the next broker. A hung broker's kernel still accepts TCP, and paho alone would wait a
    whole keepalive for the answer."""
    max_inflight: int | None = Field(None, ge=1, le=100)
    """QoS 1 messages sent and not yet acknowledged, at most. Unset: 16 on one broker, 1
    with a brokers list. A cluster that loses a stream's leader holds the publishes to it
    until it has elected another, and can then store a later one before an earlier one
    (seen on NATS 2.15): one at a time, each waiting for the PUBACK of the one before (as
    the boards do), keeps a node's events in order at the cost of one round trip each."""
    max_payload_bytes: int = Field(NATS_MAX_PAYLOAD, ge=4096)
    """The broker's largest message (NATS `max_payload`, Mosquitto `message_size_limit`):
    published snapshots must fit under it."""
    username: str | None = None
    password: str | None = Field(None, repr=False)
    tls: TlsConfig | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    telemetry_interval_s: float = Field(30.0, gt=0)
    topic_prefix: str = "safecity/v1"
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)

    _order = model_validator(mode="after")(_reconnect_order)

    @field_validator("topic_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        """Published topics start with it: MQTT forbids wildcards there, an empty level
        splits the tree, and `$` topics belong to the broker."""
        if not v or len(v) > 128:
            raise ValueError("must be 1-128 characters")
        bad = sorted({c for c in v if c in "#+\0" or ord(c) < 32})
        if bad:
            raise ValueError(f"must not contain {', '.join(map(repr, bad))} (MQTT wildcards "
                             "and control characters are not allowed in published topics)")
        if v.startswith("$"):
            raise ValueError("must not start with '$' (topics of the broker itself)")
        if "" in v.split("/"):
            raise ValueError("must not start or end with '/' or contain '//' (empty levels)")
        bad = sorted({c for c in v if c in ". "})
        if bad:
            raise ValueError(f"must not contain {', '.join(map(repr, bad))} (a NATS broker maps "
                             "'/' to '.', so a '.' or space inside a level breaks the subject)")
        return v

    @model_validator(mode="after")
    def _broker_list(self) -> MqttConfig:
        if self.brokers and {"host", "port"} & self.model_fields_set:
            raise ValueError("brokers: give either host and port or a brokers list, not both")
        seen = [str(b) for b in self.brokers]
        dup = sorted({b for b in seen if seen.count(b) > 1})
        if dup:
            raise ValueError(f"brokers: {', '.join(dup)} listed more than once")
        return self

    @property
    def addresses(self) -> list[BrokerAddress]:
        """The brokers in order of preference (one when only host and port are given)."""
        return list(self.brokers) or [BrokerAddress(host=self.host, port=self.port)]

    @property
    def inflight(self) -> int:
        """`max_inflight`, or its default for this broker list."""
        if self.max_inflight is not None:
            return self.max_inflight
        return 1 if len(self.addresses) > 1 else 16


class CameraConfig(_Model):
    kind: Literal["opencv", "picamera2", "folder"] = "opencv"
    source: str = "0"
    """opencv: device index ("0"), RTSP/HTTP URL or video file; folder: a directory of images."""
    loop: bool = False
    """Restart a video file or image folder at its end (for demos and tests)."""
    realtime: bool = True
    """Pace files at their native frame rate, like a live camera; off reads as fast as possible."""
    speed: float = Field(1.0, gt=0, le=100)
    """With realtime: play files this many times faster than their native rate (tests, demos)."""
    fps: float | None = Field(None, gt=0)
    """Rate for image folders and picamera2; files use their own rate."""
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    _order = model_validator(mode="after")(_reconnect_order)


class DetectorConfig(_Model):
    model: Path
    """A float or int8 (quantized, QDQ) ONNX file: both load and decode the same way."""
    format: Literal["auto", "yolox", "ultralytics", "e2e"] = "auto"
    backend: Literal["onnxruntime", "opencv"] = "onnxruntime"
    """Inference engine for the same ONNX file; pick the faster one on your hardware
    (`make bench` compares them). opencv sets OpenCV's process-wide thread count."""
    threads: int = Field(2, ge=1, le=64)
    """Threads one inference uses."""
    workers: int = Field(1, ge=1, le=8)
    """Frames in inference at once, each with `threads` threads. On a 2-core CPU,
    workers = 2 with threads = 1 gives more frames per second than one 2-thread inference
    (no thread waits inside a run), at the price of a longer inference per frame."""
    spin: bool = True
    """Let onnxruntime's inference threads (threads > 1) busy-wait between operators, as
    onnxruntime does by default. On a node that runs nothing else it is faster; where
    another busy process shares the cores, turn it off: a spinning thread then holds a core
    the other needs (measured: docs/performance.md)."""
    score: float = Field(0.35, gt=0, le=1)
    nms_iou: float = Field(0.45, gt=0, le=1)
    labels: Path | None = None
    """Labels file (one per line); default: model metadata, else COCO for 80-class models."""
    classes: list[str] | None = None
    """Keep only these labels; None keeps all."""

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty list would keep no detection; leave it out to keep "
                             "every class")
        if v is not None and len(set(v)) != len(v):
            raise ValueError("lists a class twice")
        return v
    min_box_area: float = Field(0.0, ge=0)
    max_box_area: float | None = Field(None, gt=0)
    """Box area bounds in source-frame pixels."""


class MotionConfig(_Model):
    enabled: bool = True
    width: int = Field(160, ge=32, le=1280)
    """Motion is computed on a frame downscaled to this width."""
    threshold: int = Field(25, ge=1, le=255)
    min_area: float = Field(0.001, ge=0, le=1)
    """Fraction of the frame that must change before it counts as motion."""
    refresh_s: float = Field(1.0, gt=0)
    """Run the detector at least this often, so still objects are re-checked. The tracker
    must outlive several refreshes (tracker.max_age_s >= 3 x refresh_s): a still person's
    track lives on detections made at this pace only."""


class RegionsConfig(_Model):
    """Detect on crops around motion and tracked objects instead of the whole frame.

    With a fixed-size model every crop is letterboxed to the model input and costs one
    inference: regions buy resolution, not CPU. With a model whose input height/width are
    dynamic (`edge-agent models dynamic`), a crop runs at the smallest multiple of 32 that
    holds it at scale 1 (at most the nominal input) and costs about (that side / the nominal
    side)^2 of one: regions then buy CPU too, and are used only where they cost less than
    the whole frame (which itself runs at its own size, 416x320 for 4:3)."""

    enabled: bool = False
    max_regions: int = Field(1, ge=1, le=8)
    """Crops per frame at most; where more are needed they merge, and when the merged crop
    is nearly the frame the whole frame is used. With a fixed-size model each crop costs one
    inference, like the whole frame. With a dynamic model a crop costs a share of one (a
    320 px crop about 0.6 of a 416 px inference), so two or three small crops can cost
    less than the whole frame."""
    min_size: int = Field(320, ge=32, le=4096)
    """Smallest crop side in frame pixels. With a fixed-size model smaller crops are
    enlarged to the model input, so distant people are seen bigger than in the whole frame;
    with a dynamic model a crop runs at its own size (never enlarged beyond rounding to 32),
    so this is also the smallest input a crop costs."""
    margin: float = Field(0.25, ge=0, le=2)
    """Each motion or track box grows by this share of its size on every side, so a person
    who moved since is still inside and never cut at the crop's edge."""
    full_frame_s: float = Field(2.0, gt=0)
    """The whole frame is detected at least this often: objects that neither move nor are
    tracked are found there."""


class TrackerConfig(_Model):
    iou_threshold: float = Field(0.3, gt=0, le=1)
    max_age_s: float = Field(6.0, gt=0)
    """A confirmed track outlives its last detection by this long. At the default 1 s
    refresh a still person's track survives four missed detections in a row (the gate's
    runs come a frame late at 5 fps: every 1.2 s), so one stay is one track (measured:
    docs/performance.md). The price: a track, and an intrusion, end up to this long after
    the person left (Frigate's default keeps a lost object 5 s)."""
    min_hits: int = Field(2, ge=1)


class ZoneConfig(_Model):
    name: str
    points: list[Point]
    """Polygon in source-frame pixels."""

    _check_name = field_validator("name")(_segment)

    @field_validator("points")
    @classmethod
    def _polygon(cls, v: list[Point]) -> list[Point]:
        if len(v) < 3:
            raise ValueError("polygon needs at least 3 points")
        if _area(v) < 1.0:
            raise ValueError("polygon has no area (its points lie on one line)")
        return v


class LineConfig(_Model):
    name: str
    a: Point
    b: Point

    _check_name = field_validator("name")(_segment)

    @model_validator(mode="after")
    def _distinct(self) -> LineConfig:
        if self.a == self.b:
            raise ValueError("a and b must be different points")
        return self


class _Rule(_Model):
    cooldown_s: float = Field(10.0, ge=0)
    severity: Severity = "warning"


class IntrusionRule(_Rule):
    type: Literal["intrusion"]
    zone: str
    labels: list[str] = ["person"]
    min_score: float = Field(0.0, ge=0, le=1)


class LineCrossingRule(_Rule):
    type: Literal["line_crossing"]
    line: str
    direction: Literal["any", "a_to_b", "b_to_a"] = "any"
    labels: list[str] = ["person"]


class LoiteringRule(_Rule):
    type: Literal["loitering"]
    zone: str
    dwell_s: float = Field(30.0, gt=0)
    labels: list[str] = ["person"]


class CrowdingRule(_Rule):
    type: Literal["crowding"]
    zone: str
    label: str = "person"
    max_count: int = Field(5, ge=0)
    """An event starts when more than max_count objects are in the zone."""
    min_duration_s: float = Field(1.0, ge=0)


class FallRule(_Rule):
    type: Literal["fall"]
    severity: Severity = "critical"
    model: Path | None = None
    """A fall-detector model; without one, falls are judged from the person box shape."""
    label: str = "Fall"
    score: float = Field(0.5, gt=0, le=1)
    threads: int = Field(1, ge=1, le=64)
    aspect_ratio: float = Field(1.2, gt=0)
    """Shape method: width/height above this counts as lying down."""
    min_duration_s: float = Field(1.0, ge=0)


class TamperRule(_Rule):
    type: Literal["tamper"]
    blocked_brightness: float = Field(20.0, ge=0, le=255)
    defocus_ratio: float = Field(0.25, gt=0, lt=1)
    """Sharpness below this fraction of the learnt baseline counts as defocused."""
    moved_ratio: float = Field(0.5, gt=0, le=1)
    """Background similarity below this counts as moved."""
    min_duration_s: float = Field(3.0, ge=0)
    learn_s: float = Field(10.0, gt=0)


Rule = Annotated[
    IntrusionRule | LineCrossingRule | LoiteringRule | CrowdingRule | FallRule | TamperRule,
    Field(discriminator="type"),
]


class SnapshotConfig(_Model):
    mode: Literal["publish", "reference", "off"] = "publish"
    """publish: JPEG on the snapshot topic; reference: saved under state_dir, path in event."""
    max_bytes: int = Field(150_000, ge=1_000)
    jpeg_quality: int = Field(80, ge=10, le=100)
    max_width: int = Field(1280, ge=64)
    redact_people: bool = True
    """Blur every person in a snapshot, found on that frame whatever `detector.classes`
    keeps. Privacy settings change in the node's file only, never by `set_config`."""
    redact_classes: list[str] = []
    """More labels of the node's model to blur in every snapshot (say "car" on a street)."""
    privacy_zones: list[list[Point]] = []
    """Polygons blacked out in every snapshot (windows, doors, private ground)."""

    @field_validator("privacy_zones")
    @classmethod
    def _polygons(cls, v: list[list[Point]]) -> list[list[Point]]:
        for i, poly in enumerate(v):
            if len(poly) < 3:
                raise ValueError(f"privacy_zones[{i}]: polygon needs at least 3 points")
            if _area(poly) < 1.0:
                raise ValueError(f"privacy_zones[{i}]: polygon has no area (its points lie "
                                 "on one line)")
        return v


PinName = int | str
"""A gpiozero pin: BCM number (17) or a name gpiozero understands ("GPIO17", "BOARD11")."""


class GpioConfig(_Model):
    """Pins per function; every one optional and off by default (gpiozero is then never
    imported)."""

    status_led: PinName | None = None
    relay: PinName | None = None
    relay_active_high: bool = True
    relay_events: list[str] = []
    """Event types that switch the relay on: while open (start..end) or relay_hold_s."""
    relay_hold_s: float = Field(10.0, gt=0)
    """How long an instant event keeps the relay on."""
    alarm_events: list[str] = []
    """Event types that make the status LED blink rapidly for alarm_s."""
    alarm_s: float = Field(10.0, gt=0)
    sos_button: PinName | None = None
    tamper_switch: PinName | None = None
    tamper_active_when: Literal["open", "closed"] = "open"
    """A lid switch is normally closed while the enclosure is shut: "open" means tampered."""
    pull_up: bool = True
    """Inputs switch to ground with the internal pull-up on (the usual wiring)."""
    bounce_s: float = Field(0.05, ge=0, le=5)

    @property
    def configured(self) -> bool:
        return any(p is not None for p in
                   (self.status_led, self.relay, self.sos_button, self.tamper_switch))


RETENTION_H = {"pipa_30d": 30 * 24.0, "eu_72h": 72.0}
"""Korea's PIPA practice for public CCTV publishes its period, 30 days being typical; the
EDPB's video guidelines ask for automatic deletion after a few days, 72 hours."""


class PrivacyConfig(_Model):
    """What a camera is for and who answers for it, shown in its retained status (the items
    of a PIPA Art. 25 notice), and how long anything it stores that shows a person is kept."""

    purpose: str = Field("", max_length=200)
    operator: str = Field("", max_length=200)
    contact: str = Field("", max_length=200)
    retention: Literal["pipa_30d", "eu_72h", "custom"] = "pipa_30d"
    retention_h: float | None = Field(None, gt=0, le=24 * 366)
    """Hours, with retention = "custom" only."""

    @model_validator(mode="after")
    def _custom(self) -> PrivacyConfig:
        if (self.retention == "custom") != (self.retention_h is not None):
            raise ValueError("retention_h is given with retention = \"custom\", and only then")
        return self

    @property
    def retention_s(self) -> float:
        hours = self.retention_h if self.retention_h is not None else RETENTION_H[self.retention]
        return hours * 3600.0


class SpoolConfig(_Model):
    """Bounds of the store-and-forward spool (state_dir/spool.db). Over them it drops
    telemetry first, then snapshots, then events, oldest first, and counts the drops."""

    max_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    """Payload bytes held at most (64 MiB: about 200 000 events without snapshots)."""
    max_age_s: float = Field(7 * 24 * 3600.0, gt=0)
    """A message held longer than this (counted while the agent runs, never by the wall
    clock) is dropped."""


class HealthConfig(_Model):
    port: int | None = Field(None, ge=1, le=65535)
    """Local HTTP health and Prometheus endpoint on 127.0.0.1; None (default) is off."""
    stale_frames_s: float = Field(10.0, gt=0)
    """/healthz fails when no frame arrived for this long."""


class DiscoveryConfig(_Model):
    enabled: bool = False
    """Home Assistant MQTT discovery for this node."""
    prefix: str = "homeassistant"
    """Home Assistant's discovery prefix; its birth topic is `<prefix>/status`."""


class Config(_Model):
    node: NodeConfig
    mqtt: MqttConfig = MqttConfig()
    camera: CameraConfig
    detector: DetectorConfig
    motion: MotionConfig = MotionConfig()
    regions: RegionsConfig = RegionsConfig()
    tracker: TrackerConfig = TrackerConfig()
    zones: list[ZoneConfig] = []
    lines: list[LineConfig] = []
    rules: list[Rule] = []
    snapshot: SnapshotConfig = SnapshotConfig()
    gpio: GpioConfig = GpioConfig()
    spool: SpoolConfig = SpoolConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    health: HealthConfig = HealthConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()

    @model_validator(mode="after")
    def _references(self) -> Config:
        problems: list[str] = []
        names: list[tuple[str, list[str]]] = [
            ("zones", [z.name for z in self.zones]), ("lines", [ln.name for ln in self.lines])]
        for kind, items in names:
            seen: set[str] = set()
            for i, name in enumerate(items):
                if name in seen:
                    problems.append(f"{kind}[{i}].name: duplicate name {name!r}")
                seen.add(name)
        if self.motion.enabled and self.tracker.max_age_s < 3 * self.motion.refresh_s:
            problems.append(
                f"tracker.max_age_s: {self.tracker.max_age_s} leaves no room for a missed "
                f"detection at motion.refresh_s {self.motion.refresh_s}: a person standing "
                "still would lose their track after a missed detection or two (keep "
                "max_age_s at least three times refresh_s)")
        if self.regions.enabled and not self.motion.enabled:
            problems.append("regions.enabled: needs motion.enabled = true (regions are "
                            "placed around motion and tracked objects)")
        if self.regions.enabled and self.tracker.max_age_s < 2 * self.regions.full_frame_s:
            problems.append(
                f"regions.full_frame_s: {self.regions.full_frame_s} leaves no room for a "
                f"missed detection within tracker.max_age_s ({self.tracker.max_age_s}): still "
                "people outside every region would lose their track at the first miss (keep "
                "max_age_s at least twice full_frame_s)")
        room = self.mqtt.max_payload_bytes - PAYLOAD_HEADROOM
        if self.snapshot.mode == "publish" and self.snapshot.max_bytes > room:
            problems.append(
                f"snapshot.max_bytes: {self.snapshot.max_bytes} does not fit under "
                f"mqtt.max_payload_bytes ({self.mqtt.max_payload_bytes}) less "
                f"{PAYLOAD_HEADROOM} bytes for topic and headers: the broker would close the "
                f"connection at every snapshot (keep it at most {room})")
        zones = {z.name for z in self.zones}
        lines = {ln.name for ln in self.lines}
        for i, rule in enumerate(self.rules):
            zone = getattr(rule, "zone", None)
            if zone is not None and zone not in zones:
                problems.append(f"rules[{i}].zone: no zone named {zone!r}")
            line = getattr(rule, "line", None)
            if line is not None and line not in lines:
                problems.append(f"rules[{i}].line: no line named {line!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


RULE_TAGS = frozenset({"intrusion", "line_crossing", "loitering", "crowding", "fall", "tamper"})


def _path(loc: tuple[int | str, ...], tags: frozenset[str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in tags:
            continue  # the discriminator tag pydantic adds for tagged unions
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def format_errors(exc: ValidationError, tags: frozenset[str] = RULE_TAGS) -> list[str]:
    """One `field.path[i]: reason` line per problem."""
    lines: list[str] = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        for line in msg.split("\n"):
            if not err["loc"] and ": " in line:
                lines.append(line)
            else:
                lines.append(f"{_path(err['loc'], tags)}: {line}")
    return lines


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, format_errors(exc)) from None


def load_config(path: Path) -> Config:
    """Load and validate; relative model/labels paths are taken from the file's folder."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    config = parse_config(data, str(path))
    return resolve_paths(config, path.parent)


def resolve_paths(config: Config, base: Path) -> Config:
    def fix(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else base / p

    det = config.detector
    updates: dict[str, Any] = {}
    det_upd = {k: v for k, v in (("model", fix(det.model)), ("labels", fix(det.labels))) if v}
    if det_upd:
        updates["detector"] = det.model_copy(update=det_upd)
    rules = [
        r.model_copy(update={"model": fix(r.model)})
        if isinstance(r, FallRule) and fix(r.model) else r
        for r in config.rules
    ]
    updates["rules"] = rules
    if not config.node.state_dir.is_absolute():
        updates["node"] = config.node.model_copy(update={"state_dir": base / config.node.state_dir})
    return config.model_copy(update=updates)
