"""Scenario files (TOML): nodes, signals and faults over time, and the expected outcomes.

Validates everything up front; an error names the field and the reason (exit code 2)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.config import SEGMENT, format_errors

NodeKind = Literal["camera", "gas", "flood", "vibration"]


class ScenarioError(ValueError):
    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSpec(_M):
    id: str = Field(pattern=SEGMENT.pattern)
    kind: NodeKind
    config: Path | None = None
    """Camera nodes: node config (TOML) relative to the scenario file."""
    board: str | None = None
    """Sensor boards: board kind in hw/boards (default: <kind>-v1)."""
    count: int = Field(1, ge=1, le=2000)
    """Boards: run this many copies, ids suffixed -001, -002, ..."""
    telemetry_interval_s: float | None = Field(None, gt=0)
    link: Literal["direct", "proxy"] = "direct"
    """proxy: through the simulator's faulty link, so link faults can reach it."""


class _Timed(_M):
    at_s: float = Field(ge=0)


class GasLeakSignal(_Timed):
    type: Literal["gas_leak"]
    node: str
    peak_ppm: float = Field(2000.0, gt=0)
    ramp_s: float = Field(10.0, gt=0)
    hold_s: float = Field(30.0, ge=0)
    decay_tau_s: float = Field(20.0, gt=0)


class FloodSignal(_Timed):
    type: Literal["flash_flood"]
    node: str
    rise_cm_per_min: float = Field(30.0, gt=0)
    crest_cm: float = Field(40.0, gt=0)
    hold_s: float = Field(60.0, ge=0)
    recede_cm_per_min: float = Field(10.0, gt=0)


class QuakeSignal(_Timed):
    type: Literal["earthquake"]
    node: str
    peak_g: float = Field(0.15, gt=0, le=4)
    s_delay_s: float = Field(4.0, ge=0)
    duration_s: float = Field(20.0, gt=0)


class TrafficSignal(_Timed):
    type: Literal["traffic"]
    node: str
    amplitude_g: float = Field(0.008, gt=0, le=1)
    every_s: float = Field(6.0, gt=0)
    burst_s: float = Field(2.5, gt=0)
    until_s: float | None = None


SIGNAL_TAGS = frozenset({"gas_leak", "flash_flood", "earthquake", "traffic"})
Signal = Annotated[GasLeakSignal | FloodSignal | QuakeSignal | TrafficSignal,
                   Field(discriminator="type")]


class Fault(_Timed):
    type: Literal["broker_down", "wifi_down", "link_slow", "link_lossy", "sensor_disconnected",
                  "sensor_stuck", "sensor_out_of_range", "i2c_error", "kill"]
    duration_s: float = Field(10.0, ge=0)
    node: str | None = None
    """Which node (all proxied nodes for link faults when omitted; required for sensors)."""
    sensor: str | None = None
    delay_s: float = Field(0.2, ge=0)
    loss: float = Field(0.05, ge=0, le=1)


class Expect(_M):
    node: str
    """Node id, or a prefix ending in '*' for a fleet."""
    event: str
    phase: Literal["start", "update", "end", "instant", "any"] = "any"
    after_s: float = Field(0.0, ge=0)
    """The triggering cause starts at this scenario time."""
    within_s: float = Field(5.0, gt=0)
    """Latency bound from after_s to arrival at the broker."""
    min_count: int = Field(1, ge=0)
    historical_ok: bool = True


class ExpectNone(_M):
    node: str
    event: str
    from_s: float = Field(0.0, ge=0)
    to_s: float | None = None


class Scenario(_M):
    name: str
    description: str = ""
    duration_s: float = Field(gt=0)
    time_scale: float = Field(1.0, ge=1.0, le=1000.0)
    """Simulated seconds per real second for sensor boards (cameras always run real time)."""
    site: str = Field("sim-block", pattern=SEGMENT.pattern)
    nodes: list[NodeSpec]
    signals: list[Signal] = []
    faults: list[Fault] = []
    expect: list[Expect] = []
    expect_none: list[ExpectNone] = []
    no_loss: bool = True
    """Every event a board or camera numbered must arrive (no gaps in (boot, seq))."""

    @model_validator(mode="after")
    def _refs(self) -> Scenario:
        ids = {n.id for n in self.nodes}
        problems: list[str] = []
        if len(ids) != len(self.nodes):
            problems.append("nodes: node ids must be unique")
        for i, s in enumerate(self.signals):
            if s.node not in ids:
                problems.append(f"signals[{i}].node: no node named {s.node!r}")
            if s.at_s > self.duration_s:
                problems.append(f"signals[{i}].at_s: after the end of the scenario")
        for i, f in enumerate(self.faults):
            if f.node is not None and f.node not in ids:
                problems.append(f"faults[{i}].node: no node named {f.node!r}")
            needs_node = f.type.startswith("sensor") or f.type in ("i2c_error", "kill",
                                                                    "wifi_down")
            if needs_node and f.node is None:
                problems.append(f"faults[{i}].node: required for {f.type}")
        targets: list[tuple[str, list[str]]] = [("expect", [e.node for e in self.expect]),
                                                ("expect_none", [e.node for e in self.expect_none])]
        for kind, names in targets:
            for i, name in enumerate(names):
                if not (name in ids or (name.endswith("*") and any(
                        n.startswith(name[:-1]) for n in ids))):
                    problems.append(f"{kind}[{i}].node: no node named {name!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


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
