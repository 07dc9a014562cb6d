"""Scenario files (TOML): nodes, signals and faults over time, and the expected outcomes.

Validates everything up front; an error names the field and the reason (exit code 2)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_agent.config import SEGMENT, format_errors
from edge_agent.uplink.discovery import KIND_EVENTS

NodeKind = Literal["camera", "gas", "flood", "vibration"]
SENSORS: dict[str, tuple[str, ...]] = {"gas": ("gas",), "flood": ("float", "probe"),
                                       "vibration": ("accel",)}
"""Which sensors a fault can name on each board kind (the first one is the default)."""
SIGNAL_KIND = {"gas_leak": "gas", "flash_flood": "flood", "earthquake": "vibration",
               "traffic": "vibration", "machinery": "vibration", "impulse": "vibration",
               "footsteps": "vibration"}
MAX_CAMERA_SCALE = 10.0


class ScenarioError(ValueError):
    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class NodeSpec(_M):
    id: str = Field(pattern=SEGMENT.pattern)
    """Node id, also its MQTT topic segment."""
    kind: NodeKind
    """camera (the real agent) or a sensor board (the real firmware)."""
    config: Path | None = None
    """Camera nodes: node config (TOML) relative to the scenario file."""
    board: str | None = None
    """Sensor boards: board kind in hw/boards (default: <kind>-v1)."""
    count: int = Field(1, ge=1, le=2000)
    """Boards: run this many copies, ids suffixed -001, -002, ..."""
    telemetry_interval_s: int | None = Field(None, ge=1)
    """Boards: seconds between telemetry messages (default: the firmware's)."""
    settings: dict[str, Any] = {}
    """Boards: firmware settings (config.json keys, one table per sensor such as
    `gas = {warmup_s = 5}`), checked against the firmware's own table before the run."""
    link: Literal["direct", "proxy"] = "direct"
    """proxy: through the simulator's faulty link, so link faults can reach it."""
    ticks_start_ms: int | None = Field(None, ge=0, lt=1 << 30)
    """Boards: where time.ticks_ms() starts at each reset (an ESP32 wraps it at 2**30). The
    default starts every board 5 to 35 s before the wrap, so every scenario crosses it."""
    smallint_check: bool = False
    """Boards: report every value the firmware keeps outside the ESP32's 31-bit small ints
    (a counter there makes the sampling loop allocate on the chip); a reported one fails
    the run."""
    broker_name: str | None = Field(None, pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$")
    """Boards: reach the broker by this host name, which the simulated DNS resolves (a
    blocking look-up, as on an ESP32) instead of by its IP address."""
    dns_delay_ms: int = Field(20, ge=0, le=60_000)
    """Boards: how long the simulated DNS takes to answer a look-up (board time; an answer
    later than lwIP's 7 s is no answer)."""
    member: int | None = Field(None, ge=1, le=3)
    """On the nats-cluster broker: the member this node connects to first (default: nodes
    are spread over the members in turn). Every node fails over to the others in turn."""

    def ids(self) -> list[str]:
        return [self.id] if self.count == 1 else [f"{self.id}-{i:03d}"
                                                  for i in range(1, self.count + 1)]


class _Timed(_M):
    at_s: float = Field(ge=0)
    """Scenario time it starts."""


class GasLeakSignal(_Timed):
    type: Literal["gas_leak"]
    node: str
    """The gas board (or boards: a prefix ending in '*')."""
    peak_ppm: float = Field(2000.0, gt=0)
    """Concentration at the top of the leak."""
    ramp_s: float = Field(10.0, gt=0)
    """Time from clean air to the peak."""
    hold_s: float = Field(30.0, ge=0)
    """Time at the peak."""
    decay_tau_s: float = Field(20.0, gt=0)
    """Time constant of the clearing after the hold."""


class FloodSignal(_Timed):
    type: Literal["flash_flood"]
    node: str
    """The flood board(s)."""
    rise_cm_per_min: float = Field(30.0, gt=0)
    """How fast the water rises."""
    crest_cm: float = Field(40.0, gt=0)
    """Highest water level."""
    hold_s: float = Field(60.0, ge=0)
    """Time at the crest."""
    recede_cm_per_min: float = Field(10.0, gt=0)
    """How fast it falls again."""
    float_at_cm: float = Field(5.0, gt=0)
    """Height of the float switch: it closes while the water is at or above it."""


class QuakeSignal(_Timed):
    type: Literal["earthquake"]
    node: str
    """The vibration board(s)."""
    peak_g: float = Field(0.15, gt=0, le=4)
    """Peak ground acceleration of the S wave."""
    s_delay_s: float = Field(4.0, ge=0)
    """Time from the P wave's onset to the S wave."""
    duration_s: float = Field(20.0, gt=0)
    """Strong motion's length."""


class TrafficSignal(_Timed):
    type: Literal["traffic"]
    node: str
    """The vibration board(s)."""
    amplitude_g: float = Field(0.008, gt=0, le=1)
    """Peak of one passing vehicle."""
    every_s: float = Field(6.0, gt=0)
    """Time between vehicles."""
    burst_s: float = Field(2.5, gt=0)
    """Length of one passing."""
    until_s: float | None = None
    """Scenario time traffic stops (default: the end)."""


class RecordingSignal(_Timed):
    """A recorded signal (CSV) played on a gas, flood or vibration board: the record's first
    row plays at at_s. The file itself is checked where the scenario's folder is known
    (sim/records.py, from sim/runner.py `prepare`)."""

    type: Literal["recording"]
    node: str
    """The board(s) it plays on: gas, flood or vibration."""
    file: Path
    """CSV relative to the scenario file: a header row, then numbers; first column seconds."""
    axes: dict[str, str] | None = None
    """Vibration boards: board axis (x, y, z) -> column (g), added to gravity on z."""
    column: str | None = None
    """Gas and flood boards: the column to play (gas: ppm, flood: water level in cm)."""
    peak: float | None = Field(None, gt=0)
    """Rescale so the largest absolute value played is this (g, ppm or cm)."""
    float_at_cm: float = Field(5.0, gt=0)
    """Flood boards: height of the float switch, as in flash_flood."""

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None:
            bad = sorted(set(v) - {"x", "y", "z"})
            if bad:
                raise ValueError(f"board axes are x, y and z, not {bad[0]!r}")
            if not v:
                raise ValueError("name at least one axis (x, y or z -> column)")
        return v

    def kind_problems(self, where: str, kinds: set[str]) -> list[str]:
        """Which fields fit the board kinds this signal names."""
        out: list[str] = []
        if "camera" in kinds:
            out.append(f"{where}.node: recording needs a gas, flood or vibration board, "
                       f"{self.node!r} is a camera")
        if "vibration" in kinds:
            if not self.axes:
                out.append(f"{where}.axes: required on a vibration board (x, y or z -> "
                           "column, in g)")
            if self.column is not None:
                out.append(f"{where}.column: only for gas and flood boards (vibration: axes)")
        if kinds & {"gas", "flood"}:
            if self.column is None:
                out.append(f"{where}.column: required on a {min(kinds & {'gas', 'flood'})} "
                           "board (the one column to play)")
            if self.axes is not None:
                out.append(f"{where}.axes: only for vibration boards (gas and flood: column)")
        if "flood" not in kinds and "float_at_cm" in self.model_fields_set:
            out.append(f"{where}.float_at_cm: only for flood boards")
        return out


class MachinerySignal(_Timed):
    type: Literal["machinery"]
    node: str
    """The vibration board(s)."""
    amplitude_g: float = Field(0.05, gt=0, le=4)
    """Steady amplitude of the machine's vibration."""
    freq_hz: float = Field(12.0, gt=0, le=50)
    """Its frequency."""
    duration_s: float = Field(600.0, gt=0)
    """How long it runs."""


class ImpulseSignal(_Timed):
    type: Literal["impulse"]
    node: str
    """The vibration board(s)."""
    peak_g: float = Field(0.3, gt=0, le=4)
    """Peak of one knock (a door slam)."""
    width_ms: float = Field(60.0, gt=0, le=2000)
    """Its length."""


class FootstepsSignal(_Timed):
    type: Literal["footsteps"]
    node: str
    """The vibration board(s)."""
    amplitude_g: float = Field(0.04, gt=0, le=1)
    """Peak of one step."""
    step_hz: float = Field(2.0, gt=0, le=10)
    """Steps per second."""
    duration_s: float = Field(10.0, gt=0)
    """How long someone walks."""


SIGNAL_TAGS = frozenset({"gas_leak", "flash_flood", "earthquake", "traffic", "recording",
                         "machinery", "impulse", "footsteps"})
Signal = Annotated[GasLeakSignal | FloodSignal | QuakeSignal | TrafficSignal
                   | RecordingSignal | MachinerySignal | ImpulseSignal | FootstepsSignal,
                   Field(discriminator="type")]


class Fault(_Timed):
    type: Literal["broker_down", "wifi_down", "link_slow", "link_lossy", "sensor_disconnected",
                  "sensor_stuck", "sensor_out_of_range", "sensor_chatter", "i2c_error", "kill",
                  "flash_stall", "reset"]
    """sensor_disconnected: a cut wire, read as the board's hardware reads it (an analog
    input 0 V; flood-v1's float input is pulled up, so it reads steady dry).
    sensor_chatter: a digital input with no pull that picks up noise (a float only)."""
    duration_s: float = Field(10.0, ge=0)
    """kill: 0 leaves the node off until the end."""
    node: str | None = None
    """Which node (all proxied nodes for link faults when omitted; required for sensors)."""
    sensor: str | None = None
    """Sensor faults: gas, float, probe or accel (default: the board's main sensor)."""
    delay_s: float = Field(0.2, ge=0)
    """link_slow: added delay each way."""
    loss: float = Field(0.05, ge=0, le=1)
    """link_lossy: share of packets dropped."""
    stall_ms: float = Field(400.0, gt=0, le=10000)
    """flash_stall: every sector erase on the node's flash takes this long while the fault
    lasts (the flash datasheet's worst case is 400 ms; typical 45 ms)."""
    member: int | None = Field(None, ge=1, le=3)
    """broker_down on the nats-cluster broker: only this member goes down (without it,
    every member)."""
    how: Literal["kill", "pause", "stop"] = "kill"
    """broker_down of one member: kill (a crash, SIGKILL), pause (a hung machine, SIGSTOP:
    its connections stay open and answer nothing) or stop (a clean shutdown, as a rolling
    restart does); it starts again after duration_s."""
    cause: Literal["watchdog", "hard", "power_on"] = "watchdog"
    """reset: the reset a board comes back from at once (the chip restarts, anything on its
    own supply such as a gas heater stays on): a watchdog, machine.reset() or a panic
    (hard), or a brownout (reported as power_on by the esp32 port)."""


_SENSOR_FAULT = frozenset({"node", "sensor", "duration_s"})
FAULT_FIELDS: dict[str, frozenset[str]] = {
    "broker_down": frozenset({"duration_s", "member", "how"}),
    "wifi_down": frozenset({"node", "duration_s"}),
    "link_slow": frozenset({"node", "duration_s", "delay_s"}),
    "link_lossy": frozenset({"node", "duration_s", "loss"}),
    "sensor_disconnected": _SENSOR_FAULT, "sensor_stuck": _SENSOR_FAULT,
    "sensor_out_of_range": _SENSOR_FAULT, "sensor_chatter": _SENSOR_FAULT,
    "i2c_error": _SENSOR_FAULT,
    "kill": frozenset({"node", "duration_s"}),
    "flash_stall": frozenset({"node", "duration_s", "stall_ms"}),
    "reset": frozenset({"node", "cause"}),
}
"""What each fault type reads besides type and at_s: a field it ignores is an error, not a
setting that silently does nothing."""


class Expect(_M):
    node: str
    """Node id, or a prefix ending in '*' for a fleet."""
    event: str
    """An event type the named nodes can send (checked)."""
    phase: Literal["start", "update", "end", "instant", "any"] = "any"
    """Only this phase counts."""
    after_s: float = Field(0.0, ge=0)
    """The triggering cause starts at this scenario time."""
    within_s: float = Field(5.0, gt=0)
    """Latency bound from after_s to arrival at the broker."""
    min_count: int = Field(1, ge=0)
    """At least this many such events (each node)."""
    historical_ok: bool = True
    """Events replayed after an outage (historical) count too."""
    severity: Literal["info", "warning", "critical"] | None = None
    """Only events of this severity count (any when omitted)."""


class Command(_Timed):
    """A command the back end sends to a node at at_s, and what its ack must say."""

    node: str
    """The node that gets the command."""
    cmd: str = Field(min_length=1)
    """The command (ping, get_config, set_config, snapshot, calibrate, ...)."""
    args: dict[str, Any] = {}
    """Its arguments."""
    id: str | None = Field(None, min_length=1, max_length=64)
    """The command's id (default cmd-<index>)."""
    ok: bool | None = None
    """The ack's `ok` must be this (unchecked when omitted)."""
    code: str | None = None
    """With ok = false: the ack's error code must be this."""
    within_s: float = Field(5.0, gt=0)
    """The ack must arrive this long after at_s."""


class ExpectNone(_M):
    node: str
    """Node id, or a prefix ending in '*'."""
    event: str
    """An event type the named nodes can send (checked)."""
    from_s: float = Field(0.0, ge=0)
    """Window start, scenario time."""
    to_s: float | None = None
    """Window end (default: the end of the scenario)."""
    severity: Literal["info", "warning", "critical"] | None = None
    """Only events of this severity are forbidden (any when omitted)."""


class Scenario(_M):
    name: str
    """Shown in reports."""
    description: str = ""
    """Free text for the reader."""
    duration_s: float = Field(gt=0)
    """Scenario length (scenario seconds)."""
    time_scale: float = Field(1.0, ge=1.0, le=1000.0)
    """Simulated seconds per real second; camera nodes play their clip this much faster."""
    seed: int = 1
    """Signal noise is reproducible from this."""
    site: str = Field("sim-block", pattern=SEGMENT.pattern)
    """Site segment of every node's topics."""
    nodes: list[NodeSpec]
    """The nodes: see below."""
    signals: list[Signal] = []
    faults: list[Fault] = []
    expect: list[Expect] = []
    expect_none: list[ExpectNone] = []
    commands: list[Command] = []
    no_loss: bool = True
    """Every event a board or camera numbered must arrive (no gaps in (boot, seq))."""
    in_order: bool = True
    """Each node's events arrive in (boot, seq) order, also after an outage."""

    def node_ids(self) -> list[str]:
        return [i for n in self.nodes for i in n.ids()]

    def resolve(self, name: str) -> list[tuple[NodeSpec, str]]:
        """The nodes a reference names: a node id (every copy of a fleet), one copy's id,
        or a prefix ending in '*'."""
        out: list[tuple[NodeSpec, str]] = []
        for spec in self.nodes:
            for i in spec.ids():
                if (name == spec.id or name == i
                        or (name.endswith("*") and i.startswith(name[:-1]))):
                    out.append((spec, i))
        return out

    @model_validator(mode="after")
    def _refs(self) -> Scenario:
        problems: list[str] = []
        if len({n.id for n in self.nodes}) != len(self.nodes) or \
                len(set(self.node_ids())) != len(self.node_ids()):
            problems.append("nodes: node ids must be unique")
        for i, n in enumerate(self.nodes):
            problems += _node_problems(f"nodes[{i}]", n, self.time_scale)
        for i, s in enumerate(self.signals):
            want = SIGNAL_KIND.get(s.type)  # None: any sensor board (recording)
            hits = self.resolve(s.node)
            if not hits:
                problems.append(f"signals[{i}].node: no node named {s.node!r}")
            elif isinstance(s, RecordingSignal):
                problems += s.kind_problems(f"signals[{i}]", {spec.kind for spec, _ in hits})
            elif any(spec.kind != want for spec, _ in hits):
                problems.append(f"signals[{i}].node: {s.type} needs a {want} board, "
                                f"{s.node!r} is not one")
            if s.at_s > self.duration_s:
                problems.append(f"signals[{i}].at_s: after the end of the scenario")
        for i, f in enumerate(self.faults):
            ignored = sorted(f.model_fields_set - FAULT_FIELDS[f.type] - {"type", "at_s"})
            problems += [f"faults[{i}].{name}: a {f.type} fault does not use it"
                         for name in ignored]
            problems += self._fault_problems(f"faults[{i}]", f)
        for i, e in enumerate(self.expect):
            problems += self._event_problems(f"expect[{i}]", e.node, e.event)
        for i, never in enumerate(self.expect_none):
            problems += self._event_problems(f"expect_none[{i}]", never.node, never.event)
        targets: list[tuple[str, list[str]]] = [("expect", [e.node for e in self.expect]),
                                                ("expect_none", [e.node for e in self.expect_none]),
                                                ("commands", [c.node for c in self.commands])]
        for i, c in enumerate(self.commands):
            if c.at_s > self.duration_s:
                problems.append(f"commands[{i}].at_s: after the end of the scenario")
            if c.code is not None and c.ok is not False:
                problems.append(f"commands[{i}].code: only with ok = false")
        for kind, names in targets:
            for i, name in enumerate(names):
                if not self.resolve(name):
                    problems.append(f"{kind}[{i}].node: no node named {name!r}")
        if problems:
            raise ValueError("\n".join(dict.fromkeys(problems)))
        return self

    def _event_problems(self, where: str, node: str, event: str) -> list[str]:
        """An event name no node it names can send would make an expectation that can
        never fail (expect_none) or never pass (expect): a typo is an error."""
        kinds = {spec.kind for spec, _ in self.resolve(node)}
        if not kinds:
            return []  # the node reference itself is reported
        sent = {t for k in kinds for t in KIND_EVENTS[k]}
        if event in sent:
            return []
        return [f"{where}.event: {event!r} is not an event a {'/'.join(sorted(kinds))} node "
                f"sends (one of {', '.join(sorted(sent))})"]

    def _fault_problems(self, where: str, f: Fault) -> list[str]:
        if f.at_s > self.duration_s:
            return [f"{where}.at_s: after the end of the scenario"]
        if f.type == "broker_down":
            return [f"{where}.how: only with member"] if (
                "how" in f.model_fields_set and f.member is None) else []
        if f.node is None:
            if f.type in ("link_slow", "link_lossy"):
                return [] if any(n.link == "proxy" for n in self.nodes) else [
                    f"{where}.type: {f.type} needs a node with link = \"proxy\""]
            return [f"{where}.node: required for {f.type}"]
        hits = self.resolve(f.node)
        if not hits:
            return [f"{where}.node: no node named {f.node!r}"]
        kinds = {spec.kind for spec, _ in hits}
        if f.type in ("flash_stall", "reset") and "camera" in kinds:
            return [f"{where}.node: {f.type} needs a sensor board, {f.node!r} is a camera"]
        if f.type.startswith("sensor") or f.type == "i2c_error":
            if "camera" in kinds:
                return [f"{where}.node: {f.type} needs a sensor board, {f.node!r} is a camera"]
            if f.type == "i2c_error" and kinds != {"vibration"}:
                return [f"{where}.node: i2c_error needs a vibration board"]
            bad = [k for k in kinds if f.sensor is not None and f.sensor not in SENSORS[k]]
            if bad:
                return [f"{where}.sensor: a {bad[0]} board has "
                        + " or ".join(SENSORS[bad[0]]) + f", not {f.sensor!r}"]
        via_link = f.type in ("link_slow", "link_lossy") or (f.type == "wifi_down"
                                                              and "camera" in kinds)
        if via_link and any(spec.link != "proxy" for spec, _ in hits):
            return [f"{where}.node: {f.type} needs link = \"proxy\" on {f.node!r}"]
        if f.type == "sensor_chatter" and (kinds != {"flood"} or f.sensor not in (None, "float")):
            return [f"{where}.type: sensor_chatter is a digital input picking up noise: it needs "
                    "a flood board's float (sensor = \"float\")"]
        if f.type == "sensor_out_of_range" and "flood" in kinds and f.sensor in (None, "float"):
            return [f"{where}.sensor: a float switch is on or off; out of range needs "
                    "sensor = \"probe\""]
        return []


def _node_problems(where: str, n: NodeSpec, time_scale: float) -> list[str]:
    if n.kind == "camera":
        out = []
        if n.config is None:
            out.append(f"{where}.config: required for camera nodes (a node config template)")
        if n.count != 1:
            out.append(f"{where}.count: camera nodes run one agent each")
        if n.settings or n.telemetry_interval_s is not None:
            out.append(f"{where}.settings: camera nodes take their settings from config")
        if n.ticks_start_ms is not None:
            out.append(f"{where}.ticks_start_ms: only sensor boards have an ESP32 clock")
        if n.broker_name is not None:
            out.append(f"{where}.broker_name: camera nodes reach the broker by their config")
        if time_scale > MAX_CAMERA_SCALE:
            out.append(f"time_scale: at most {MAX_CAMERA_SCALE:g} with camera nodes (the "
                       "agent plays its clip that much faster and must keep up)")
        return out
    if n.config is not None:
        return [f"{where}.config: only camera nodes take a config file (boards: settings)"]
    return []


def settings_problems(scenario: Scenario, defaults: dict[str, Any]) -> list[str]:
    """Board settings checked against the firmware's defaults (firmware_defaults()): the key
    exists there and the value has the same type. The firmware checks ranges itself."""
    out: list[str] = []
    for i, n in enumerate(scenario.nodes):
        if n.kind == "camera":
            continue
        for key, value in n.settings.items():
            where = f"nodes[{i}].settings.{key}"
            if key in RESERVED:
                out.append(f"{where}: set by the simulator")
            elif key == "tls":  # the board would have no ca.der and no listener to verify
                out.append(f"{where}: scenarios run boards on plain MQTT (the simulator's "
                           "broker has no TLS listener)")
            elif key in SENSORS and key != n.kind:
                out.append(f"{where}: a {n.kind} board has no {key} sensor")
            elif key == n.kind:
                if not isinstance(value, dict):
                    out.append(f"{where}: must be a table of {key} settings")
                    continue
                for k2, v2 in value.items():
                    out += _typed(f"{where}.{k2}", defaults[key].get(k2, _MISSING), v2)
            else:
                out += _typed(where, defaults.get(key, _MISSING), value)
    return out


_MISSING = object()
RESERVED = frozenset({"site", "node", "broker_host", "broker_port"})


def _typed(where: str, default: Any, value: Any) -> list[str]:
    if default is _MISSING or isinstance(default, dict):
        return [f"{where}: unknown setting"]
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, float):
        ok = isinstance(value, int | float)
    else:
        ok = isinstance(value, str)
    name = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return [] if ok else [f"{where}: must be {name[type(default)]}"]


def load_scenario(path: Path) -> Scenario:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), [f"not valid TOML: {exc}"]) from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(str(path), format_errors(exc, SIGNAL_TAGS)) from None
