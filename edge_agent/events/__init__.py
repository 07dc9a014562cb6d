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
from edge_agent.config import Rule as RuleConfig
from edge_agent.events.base import Rule
from edge_agent.events.crowding import Crowding
from edge_agent.events.fall import Fall
from edge_agent.events.intrusion import Intrusion
from edge_agent.events.line_crossing import LineCrossing
from edge_agent.events.loitering import Loitering
from edge_agent.events.tamper import Tamper
from edge_agent.events.zones import Line, Zone

__all__ = ["build_rule", "build_rules", "rule_geometry"]


def build_rules(config: Config) -> list[Rule]:
    """One rule object per `config.rules` entry, in config order."""
    return [build_rule(config, r) for r in config.rules]


def build_rule(config: Config, r: RuleConfig) -> Rule:
    """The rule's state machine, its zone or line name resolved to geometry (the config has
    already checked that they exist). A fall rule with a model loads it here."""
    zones = {z.name: z for z in config.zones}
    lines = {ln.name: ln for ln in config.lines}
    if isinstance(r, IntrusionRule):
        return Intrusion(r, Zone.from_config(zones[r.zone]))
    if isinstance(r, LineCrossingRule):
        return LineCrossing(r, Line.from_config(lines[r.line]))
    if isinstance(r, LoiteringRule):
        return Loitering(r, Zone.from_config(zones[r.zone]))
    if isinstance(r, CrowdingRule):
        return Crowding(r, Zone.from_config(zones[r.zone]))
    if isinstance(r, FallRule):
        return Fall(r)
    if isinstance(r, TamperRule):
        return Tamper(r)
    raise TypeError(f"no rule for {type(r).__name__}")


def rule_geometry(config: Config, r: RuleConfig) -> object:
    """The zone or line a rule watches, as config data (None for rules that watch none)."""
    name = getattr(r, "zone", None)
    if name is not None:
        return next(z.model_dump(mode="json") for z in config.zones if z.name == name)
    name = getattr(r, "line", None)
    if name is not None:
        return next(ln.model_dump(mode="json") for ln in config.lines if ln.name == name)
    return None
