"""A TCP proxy between nodes and the broker that can cut, delay or drop the link.

Only listens on loopback; it simulates a bad network, never a broker."""

from __future__ import annotations

import random
import socket
import threading
import time

from sim.broker import free_port


class FaultyLink:
    """Forwards 127.0.0.1:port -> upstream; `down()` cuts every connection and refuses new
    ones until `up()`; `delay_s` adds latency per chunk; `loss` drops the connection with
    that probability per chunk (TCP cannot lose bytes silently, so loss = resets)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port or free_port()
        self.delay_s = 0.0
        self.loss = 0.0
        self._up = threading.Event()
        self._up.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._rng = random.Random(3)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(256)
        self._server.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name="faulty-link", daemon=True)
        self._thread.start()

    def down(self) -> None:
        self._up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            _close(c)

    def up(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._stop.set()
        self.down()
        self._server.close()
        self._thread.join(2)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if not self._up.is_set():
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)  # the 2 s was for connecting: an idle link is not dead
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.loss and self._rng.random() < self.loss:
                    break
                if self.delay_s:
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
