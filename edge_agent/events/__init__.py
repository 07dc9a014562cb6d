"""Event rules: one state machine per configured rule, built from the node config.

Builds and returns rules only; never publishes, numbers or serialises events."""

from __future__ import annotations

from edge_agent.config import (
    Config,
    CrowdingRule,
    FallRule,
    IntrusionRule,
    LineCrossingRule,
    LoiteringRule,
    TamperRule,
)
from edge_agent.events.base import Rule
from edge_agent.events.crowding import Crowding
from edge_agent.events.fall import Fall
from edge_agent.events.intrusion import Intrusion
from edge_agent.events.line_crossing import LineCrossing
from edge_agent.events.loitering import Loitering
from edge_agent.events.tamper import Tamper
from edge_agent.events.zones import Line, Zone

__all__ = ["build_rules"]


def build_rules(config: Config) -> list[Rule]:
    """One rule object per `config.rules` entry, in config order, with zone and line names
    resolved to geometry (the config has already checked that they exist)."""
    zones = {z.name: Zone.from_config(z) for z in config.zones}
    lines = {ln.name: Line.from_config(ln) for ln in config.lines}
    rules: list[Rule] = []
    for r in config.rules:
        if isinstance(r, IntrusionRule):
            rules.append(Intrusion(r, zones[r.zone]))
        elif isinstance(r, LineCrossingRule):
            rules.append(LineCrossing(r, lines[r.line]))
        elif isinstance(r, LoiteringRule):
            rules.append(Loitering(r, zones[r.zone]))
        elif isinstance(r, CrowdingRule):
            rules.append(Crowding(r, zones[r.zone]))
        elif isinstance(r, FallRule):
            rules.append(Fall(r))
        elif isinstance(r, TamperRule):
            rules.append(Tamper(r))
    return rules
