"""Which broker a node connects to next: its list in order of preference, the next one
after a lost connection, jittered delays, and when to look for its first choice again.

Only decides; never opens a connection (the uplink does, through paho)."""

from __future__ import annotations

import random

from edge_agent.config import BrokerAddress


class Failover:
    """A lost connection moves to the next broker after a random 0..jitter_s; a broker that
    refuses moves on at once to the next, and each full round of refusals doubles the wait
    (min_s up to max_s, with a random half of it), so a thousand nodes spread out instead of
    hammering the survivors in step. Sessions live in the cluster, so a move loses nothing
    the broker queued."""

    def __init__(self, brokers: list[BrokerAddress], min_s: float, max_s: float,
                 jitter_s: float, failback_s: float,
                 rng: random.Random | None = None) -> None:
        if not brokers:
            raise ValueError("at least one broker is needed")
        self.brokers = brokers
        self.min_s = min_s
        self.max_s = max_s
        self.jitter_s = jitter_s
        self.failback_s = failback_s
        self._rng = rng or random.Random()
        self.index = 0
        self.refused = 0
        """Failed attempts since the last connection."""
        self.moves = 0
        """Times the node changed broker (lost connection or back to the first choice)."""
        self._failback_at: float | None = None

    @property
    def current(self) -> BrokerAddress:
        return self.brokers[self.index]

    @property
    def on_first_choice(self) -> bool:
        return self.index == 0

    def lost(self) -> float:
        """The connection dropped: move to the next broker; returns the seconds to wait."""
        self._advance()
        return self._rng.uniform(0.0, self.jitter_s)

    def refused_attempt(self) -> float:
        """An attempt failed: move to the next broker; returns the seconds to wait."""
        self.refused += 1
        self._advance()
        rounds = (self.refused - 1) // len(self.brokers)
        cap = min(self.max_s, self.min_s * 2 ** min(rounds, 30))
        return self._rng.uniform(cap / 2, cap)

    def connected(self, now: float) -> None:
        """Connected to `current`: plan the next look at the first choice if not on it."""
        self.refused = 0
        self._failback_at = None if self.on_first_choice else \
            now + self.failback_s * self._rng.uniform(0.5, 1.5)

    def failback_due(self, now: float) -> bool:
        return self._failback_at is not None and now >= self._failback_at

    def back_to_first(self, now: float) -> None:
        self._failback_at = None
        if not self.on_first_choice:
            self.index = 0
            self.moves += 1

    def postpone_failback(self, now: float) -> None:
        self._failback_at = now + self.failback_s * self._rng.uniform(0.5, 1.5)

    def _advance(self) -> None:
        if len(self.brokers) > 1:
            self.index = (self.index + 1) % len(self.brokers)
            self.moves += 1
