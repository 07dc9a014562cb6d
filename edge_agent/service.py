"""systemd readiness, status and watchdog notifications over $NOTIFY_SOCKET (sd_notify).

Speaks the datagram protocol itself (no libsystemd); never pings the watchdog unless the
caller says the node is working, and is a silent no-op when not run by systemd."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends `KEY=value` datagrams to the service manager; no-op without NOTIFY_SOCKET."""

    def __init__(self, address: str | None) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        self.address = address or None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send one datagram; True if systemd got it. Failures are logged, never raised:
        a lost notification must not take the agent down (systemd will say so itself)."""
        if self.address is None:
            return False
        data = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall(data)
        except OSError as exc:
            log.warning("event=sd_notify_failed socket=%s error=%s",
                        self.address.replace("\0", "@"), exc.strerror or exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: the unit counts as started (Type=notify). Send once the node can do its
        job (config, model, spool, pins), never waiting on a camera or a broker."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """Free text shown by `systemctl status` (one line)."""
        return self.notify("STATUS=" + text.replace("\n", " "))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC in seconds (as sd_watchdog_enabled advises), or None when the
    watchdog is off or meant for another process (WATCHDOG_PID)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("event=watchdog_usec_invalid value=%r", usec)
        return None
    return value / 2e6 if value > 0 else None


class Watchdog:
    """Feeds the systemd watchdog from the main loop, only while the caller reports health.

    The caller is the loop whose liveness it vouches for: when that loop stops turning the
    pings stop and systemd restarts the unit after WatchdogSec. Pings are rate-limited to
    half the watchdog interval."""

    def __init__(self, notifier: Notifier, interval_s: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.interval_s = interval_s if notifier.enabled else None
        self._clock = clock
        self._last: float | None = None
        self.pings = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Watchdog:
        return cls(Notifier.from_env(env), watchdog_interval(env))

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    def kick_if(self, healthy: bool) -> bool:
        """Call every loop iteration; pings when healthy and due. True if it pinged."""
        if self.interval_s is None or not healthy:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        if self.notifier.watchdog():
            self._last = now
            self.pings += 1
            return True
        return False
