"""Starts a private Mosquitto broker on a free loopback port with a generated config.

Used by tests and the simulator; never binds anything but 127.0.0.1."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range. A broker killed and started
    again must find its port free; an ephemeral one may meanwhile be any outgoing
    connection's own port, or a reconnecting client's, which then connects to itself (TCP
    simultaneous open) and holds the port the broker wants."""
    top = max(1100, min(_ephemeral_low(), 65536))
    for _ in range(500):
        port = random.randrange(1024 if top < 11000 else 10000, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port found below {top}")


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


class MosquittoBroker:
    """A Mosquitto process; `extra_config` lines are appended to the generated config.

    Mosquitto 2.x ignores `-p` once a config defines a listener, so the port is written
    into the config file."""

    def __init__(self, port: int | None = None, extra_config: str = "",
                 anonymous: bool = True, persistence: bool = False) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (make test installs it)")
        self.exe = exe
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="mosq-"))
        self.log_path = self._dir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {self._dir}/"]
            # Started as root, Mosquitto drops to its own user, which must be able to write
            # its database into our private folder at shutdown (or the sessions are lost).
            self._dir.chmod(0o777)
        self.config_path = self._dir / "mosquitto.conf"
        self.config_path.write_text("\n".join(lines) + "\n" + extra_config + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(self.config_path)],
                                     stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
