"""An MQTT broker inside the simulator's own process (amqtt from PyPI), for machines without
Mosquitto, with the same start/stop interface as sim.broker.MosquittoBroker.

Never binds anything but 127.0.0.1; an outage (stop) cuts its network, never its sessions."""

from __future__ import annotations

import asyncio
import logging
import threading
from types import TracebackType
from typing import Any

from sim.broker import free_port
from sim.proxy import FaultyLink


def _broker_class() -> Any:
    from amqtt.broker import Broker  # imported late: only needed without Mosquitto

    class SessionScopedBroker(Broker):  # type: ignore[misc]
        """amqtt 0.12 sends a connecting client the retained messages matching every
        client's subscriptions (a board would get other nodes' status as commands): only
        the session's own subscriptions count."""

        async def _publish_retained_messages_for_subscription(
                self, subscription: tuple[str, int], session: Any) -> None:
            holders = self._subscriptions.get(subscription[0], [])
            if any(s is session for s, _ in holders):
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return SessionScopedBroker


class EmbeddedBroker:
    """amqtt on a private port behind a FaultyLink on `port`. amqtt clears every session on
    shutdown and does not restart cleanly in place, so `stop()` takes the link down (every
    connection cut, new ones refused) and `start()` brings it back: to the nodes that is a
    broker outage. The consumer connects to `consumer_port`, behind the cut, because amqtt
    queues nothing for an anonymous client while it is away."""

    name = "amqtt (embedded)"

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._inner = free_port()
        self.consumer_port = self._inner
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._link: FaultyLink | None = None

    @property
    def pid(self) -> int | None:
        """No process of its own: its CPU is the simulator's."""
        return None

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        if self._link is not None:
            self._link.up()
            return self
        broker_class = _broker_class()
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="amqtt", daemon=True)
        self._thread.start()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self._inner}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }

        async def boot() -> Any:
            broker = broker_class(config, loop=loop)
            await broker.start()
            return broker

        self._broker = asyncio.run_coroutine_threadsafe(boot(), loop).result(timeout)
        self._link = FaultyLink(self._inner, port=self.port)
        return self

    def stop(self) -> None:
        """A broker outage: every connection cut and new ones refused until start()."""
        if self._link is not None:
            self._link.down()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
        loop = self._loop
        if loop is None:
            return
        if self._broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop).result(10)
            except Exception:  # noqa: BLE001 - amqtt may time out its own loops at shutdown
                pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if not loop.is_running():
            loop.close()
        self._loop = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
