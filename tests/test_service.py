"""systemd notify and watchdog against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.service import Notifier, Watchdog, watchdog_interval


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _receive(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield str(path), sock
    sock.close()


def test_ready_status_stopping_reach_the_socket(
        systemd_socket: tuple[str, socket.socket]) -> None:
    path, sock = systemd_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("first frame, broker connected")
    assert n.status("fps=9.8\nbroker=online")
    assert n.stopping()
    got = _receive(sock)
    assert got == ["READY=1\nSTATUS=first frame, broker connected",
                   "STATUS=fps=9.8 broker=online", "STOPPING=1"]


def test_abstract_namespace_socket() -> None:
    name = f"safecity-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert _receive(sock) == ["READY=1"]
    finally:
        sock.close()


def test_no_op_without_systemd() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready()
    wd = Watchdog.from_env({"WATCHDOG_USEC": "30000000"})
    assert not wd.enabled
    assert not wd.kick_if(True)


def test_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    assert not Notifier(str(tmp_path / "gone")).ready()


def test_watchdog_interval_from_env() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) \
        == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "nonsense"}) is None
    assert watchdog_interval({}) is None


def test_watchdog_pings_only_while_healthy_and_at_half_interval(
        systemd_socket: tuple[str, socket.socket]) -> None:
    path, sock = systemd_socket
    clock = FakeClock()
    wd = Watchdog(Notifier(path), watchdog_interval({"WATCHDOG_USEC": "30000000"}), clock)
    assert wd.kick_if(True)            # first healthy iteration pings at once
    clock.now += 5
    assert not wd.kick_if(True)        # not due yet (15 s)
    clock.now += 11
    assert not wd.kick_if(False)       # due, but frames stopped: no ping
    clock.now += 100
    assert not wd.kick_if(False)       # still stuck: systemd will restart us
    assert wd.kick_if(True)            # frames back: ping
    assert _receive(sock) == ["WATCHDOG=1", "WATCHDOG=1"]
    assert wd.pings == 2
