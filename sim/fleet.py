"""The nodes of a scenario: every board (SimBoard, `count` copies, the firmware compiled once
for all) and every camera node (the real agent), each with its input feed and, when asked
for, its own faulty link to the broker.

Starts, stops and breaks nodes the way a technician could; never reads what they publish."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.board import SimBoard, build_firmware
from sim.camera import CameraNode, camera_config, template_media
from sim.clock import ScenarioClock
from sim.inputs import Feed, VibrationFeed, feed_for
from sim.proxy import FaultyLink
from sim.scenario import NodeSpec, Scenario

WDT_REAL_S = 1.0
SUPERVISE_S = 0.25
"""How often each board's supervisor looks for a watchdog stamp, a crash or a wake-up: well
inside the 10 s watchdog, and cheap enough for hundreds of boards."""

CAMERA_FAILBACK_S = 10.0
"""A camera on another member looks for its first choice this often (real seconds): a
scenario lasts minutes, not the field's failback period."""

BOARD_FAILBACK_S = 10
"""The same for a board, in board seconds (its config's least `failback_s`)."""


@dataclass
class BoardNode:
    id: str
    kind: str
    board: SimBoard
    feed: Feed
    link: FaultyLink | None

    def start(self) -> None:
        self.board.start()

    def stop(self) -> None:
        self.board.stop()

    def kill(self) -> None:
        self.board.kill()

    def restart(self) -> None:
        self.board.restart()

    def wifi(self, up: bool) -> None:
        self.board.wifi(up)

    def pid(self) -> int | None:
        return self.board.pid() if self.board.alive() else None

    def log_text(self) -> str:
        return self.board.log_text(stamped=True)


@dataclass
class CamNode:
    id: str
    kind: str
    camera: CameraNode
    link: FaultyLink | None

    def start(self) -> None:
        self.camera.start()

    def stop(self) -> None:
        self.camera.stop()

    def kill(self) -> None:
        self.camera.kill()

    def restart(self) -> None:
        self.camera.restart()

    def wifi(self, up: bool) -> None:
        """A camera's uplink is its cable or WiFi: the link in front of it goes down."""
        if self.link is not None:
            (self.link.up if up else self.link.down)()

    def pid(self) -> int | None:
        return self.camera.pid()

    def log_text(self) -> str:
        return self.camera.log_text()


Node = BoardNode | CamNode


def first_members(scenario: Scenario, members: int) -> dict[str, int]:
    """Each node's first-choice member (0-based): its `member` when it names one, else the
    members in turn, in the scenario's order (one broker: 0 for all)."""
    out: dict[str, int] = {}
    turn = 0
    for spec in scenario.nodes:
        for node_id in spec.ids():
            if spec.member is not None and members > 1:
                out[node_id] = spec.member - 1
            else:
                out[node_id] = turn % members
                turn += 1
    return out


@dataclass(frozen=True)
class Where:
    """Where a run finds things: the scenario's folder (for camera templates), the work
    folder (boards' flash, agents' state), and the shared media and models."""

    scenario_dir: Path
    work: Path
    shared: Path
    var: Path


class Fleet:
    """Every node of a scenario, built before the clock starts so that starting them is quick."""

    def __init__(self, scenario: Scenario, where: Where, host: str, ports: list[int],
                 defaults: dict[str, Any]) -> None:
        """`ports`: the broker's MQTT port, or each cluster member's: nodes are spread over
        them in turn (or put on their `member`), and every node gets them all as its broker
        list, its own member first."""
        self.scenario = scenario
        self.where = where
        self.nodes: dict[str, Node] = {}
        self.links: list[FaultyLink] = []
        self.members: dict[str, int] = {}
        """Each node's first-choice member (an index into the ports)."""
        self._host = host
        self._ports = ports
        self._defaults = defaults
        self._build: Path | None = None
        self.members = first_members(scenario, len(ports))
        for spec in scenario.nodes:
            for node_id in spec.ids():
                self._port = ports[self.members[node_id]]
                link = FaultyLink(self._port) if spec.link == "proxy" else None
                if link is not None:
                    self.links.append(link)
                self.nodes[node_id] = (self._camera(spec, node_id, link) if spec.kind == "camera"
                                       else self._board(spec, node_id, link))

    def _board(self, spec: NodeSpec, node_id: str, link: FaultyLink | None) -> BoardNode:
        if self._build is None:
            self._build = build_firmware(self.where.work / "build")
        config: dict[str, Any] = copy.deepcopy(spec.settings)
        if spec.telemetry_interval_s is not None:
            config["telemetry_interval_s"] = spec.telemetry_interval_s
        config.setdefault("ntp", False)
        # The watchdog counts board time: at x100 its 10 s would be 0.1 s of real time, and
        # a host's scheduling hiccup would reset the board. Keep at least WDT_REAL_S real.
        config.setdefault("wdt_timeout_ms", int(min(120_000, max(
            10_000, WDT_REAL_S * 1000 * self.scenario.time_scale))))
        board = SimBoard(spec.kind, node_id, self._host, link.port if link else self._port,
                         self.where.work / "boards" / node_id, site=self.scenario.site,
                         config=config, board=spec.board, time_scale=self.scenario.time_scale,
                         t0_us=0, defaults=self._defaults, build=self._build,
                         ticks_start_ms=spec.ticks_start_ms, smallint_check=spec.smallint_check)
        board.supervise_s = SUPERVISE_S
        if link is None and len(self._ports) > 1:  # its member first, then the others
            board.config.setdefault("failover_brokers", ",".join(
                f"{self._host}:{p}" for p in self._order(node_id)[1:]))
            board.config.setdefault("failback_s", BOARD_FAILBACK_S)
        if spec.broker_name is not None:  # named: the board looks the broker up (and waits)
            board.config["broker_host"] = spec.broker_name
            board.dns(delay_ms=spec.dns_delay_ms, hosts={spec.broker_name: self._host})
        board.dir.mkdir(parents=True, exist_ok=True)
        feed = feed_for(self.scenario, node_id, spec.kind, board)
        return BoardNode(node_id, spec.kind, board, feed, link)

    def _camera(self, spec: NodeSpec, node_id: str, link: FaultyLink | None) -> CamNode:
        assert spec.config is not None  # the scenario's validation requires it
        template = spec.config if spec.config.is_absolute() else \
            self.where.scenario_dir / spec.config
        clip, model = template_media(template, self.where.shared, self.where.var)
        work = self.where.work / "cameras" / node_id
        order = self._order(node_id)
        brokers = None if link is not None or len(order) == 1 else order
        cfg = camera_config(template, work / "node.toml", clip=clip, model=model,
                            port=link.port if link else self._port, state_dir=work / "state",
                            brokers=brokers,
                            mqtt={"failback_s": CAMERA_FAILBACK_S} if brokers else {},
                            node={"id": node_id, "site": self.scenario.site},
                            camera={"speed": self.scenario.time_scale})
        return CamNode(node_id, "camera", CameraNode(node_id, cfg, work), link)

    def _order(self, node_id: str) -> list[int]:
        """The member ports in the node's order of preference: its own member first."""
        first = self.members[node_id]
        return self._ports[first:] + self._ports[:first]

    def boards(self) -> list[BoardNode]:
        return [n for n in self.nodes.values() if isinstance(n, BoardNode)]

    def cameras(self) -> list[CamNode]:
        return [n for n in self.nodes.values() if isinstance(n, CamNode)]

    def start(self, clock: ScenarioClock) -> None:
        """Inputs first (what the sensors read at power-on), then power every node on."""
        for b in self.boards():
            b.board.t0_us = clock.t0_us
            if isinstance(b.feed, VibrationFeed):
                b.feed.start()
            b.feed.update(0.0)
        for n in self.nodes.values():
            n.start()

    def stop(self) -> None:
        for c in self.cameras():
            c.camera.stop()
        for b in self.boards():
            b.board.kill()  # all at once: a stop() each would wait for its thread in turn
        for b in self.boards():
            b.stop()
        for link in self.links:
            link.close()

    def pids(self, kind: str | None = None) -> list[int]:
        return [p for n in self.nodes.values() if kind is None or n.kind == kind
                for p in [n.pid()] if p is not None]
