"""The contract's topic layout for one node (docs/contract.md).

Only builds strings; never validates payloads or talks to a broker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    site: str
    node: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.node}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def ack(self) -> str:
        return f"{self.base}/cmd/ack"

    def event(self, event_type: str) -> str:
        return f"{self.base}/event/{event_type}"

    def snapshot(self, event_id: str) -> str:
        return f"{self.base}/snapshot/{event_id}"

    @property
    def audit(self) -> str:
        return f"{self.base}/audit"

    def zone(self, name: str) -> str:
        return f"{self.base}/zone/{name}"

    def button(self, command: str) -> str:
        """Where a dashboard presses one command: the topic names it, so a broker ACL can
        grant exactly these commands (the node runs only the one its topic names)."""
        return f"{self.base}/button/{command}"
