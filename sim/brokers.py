"""Picks the broker for a run: Mosquitto on a free port when it is installed, otherwise the
embedded Python broker, behind one small interface the runner and the faults use.

Never starts a broker on anything but 127.0.0.1 and never changes a system broker."""

from __future__ import annotations

import shutil
from typing import Literal

from sim.broker import MosquittoBroker, find_mosquitto
from sim.embedded_broker import EmbeddedBroker
from sim.nats_cluster import NatsCluster

BrokerChoice = Literal["auto", "mosquitto", "embedded", "nats-cluster"]
CHOICES: tuple[BrokerChoice, ...] = ("auto", "mosquitto", "embedded", "nats-cluster")


class Mosquitto(MosquittoBroker):
    """Mosquitto with persistence, so sessions and queued QoS 1 messages survive a stop and
    start (the recorder's persistent session then misses nothing during an outage)."""

    name = "mosquitto"

    def __init__(self) -> None:
        super().__init__(persistence=True)
        self.consumer_port = self.port

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def open_broker(choice: BrokerChoice = "auto") -> Mosquitto | EmbeddedBroker | NatsCluster:
    """A started broker; close() it when done. nats-cluster: three members on loopback,
    each healthy before this returns."""
    if choice == "nats-cluster":
        return NatsCluster().start()
    if choice == "mosquitto" or (choice == "auto" and find_mosquitto() is not None):
        broker = Mosquitto()
        broker.start()
        return broker
    return EmbeddedBroker().start()
