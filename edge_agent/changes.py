"""Builds a configuration before anything runs it, and says what a change touches.

A config can pass the schema and still not run: a model file that is gone, a class the
model does not have, a rule watching a label no detector emits, a fall model that does not
load. Building it here turns each of those into a `field.path: reason` line: in a
`set_config` ack (nothing stored, nothing applied), or at start as the reason stored remote
changes are set aside. The pipeline never meets a config that has not been built."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.config import (
    Config,
    CrowdingRule,
    FallRule,
    IntrusionRule,
    LineCrossingRule,
    LoiteringRule,
)
from edge_agent.config import Rule as RuleConfig
from edge_agent.detect.detector import Detector
from edge_agent.detect.errors import ModelError
from edge_agent.events import build_rule, rule_geometry
from edge_agent.events.base import Rule

SECTIONS = ("node", "mqtt", "camera", "detector", "motion", "regions", "tracker", "zones",
            "lines", "rules", "snapshot", "gpio", "spool", "privacy", "health", "discovery")


class BuildError(Exception):
    """A config that cannot run; `problems` are `field.path: reason` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Built:
    """What a config builds to. `detector` is None when the caller's running one was
    reused (the detector section did not change)."""

    detector: Detector | None
    rules: list[Rule]
    keys: list[str]
    """One identity per rule: its settings and the geometry it watches. A rule whose key
    did not change in a live change keeps running (its tracks and open events survive)."""


def build(config: Config, detector: Detector | None = None) -> Built:
    """Load the detector (unless `detector`, already running this config's detector
    section, is given), check every label against it, and construct every rule (fall
    models load here). Raises BuildError with every problem found."""
    problems: list[str] = []
    loaded: Detector | None = None
    if detector is None:
        try:
            detector = loaded = Detector.from_config(config.detector)
        except ModelError as exc:
            problems.append(f"detector.model: {exc}")
    if detector is not None:
        problems += label_problems(config, detector.labels)
    rules: list[Rule] = []
    for i, rule in enumerate(config.rules):
        try:
            built = build_rule(config, rule)
        except ModelError as exc:
            problems.append(f"rules[{i}].model: {exc}")
            continue
        fall_model = getattr(built, "detector", None)
        if isinstance(rule, FallRule) and fall_model is not None \
                and rule.label not in fall_model.labels:
            problems.append(f"rules[{i}].label: {rule.label!r} is not a class of "
                            f"{rule.model} ({', '.join(fall_model.labels)})")
        rules.append(built)
    if problems:
        raise BuildError(problems)
    return Built(loaded, rules, [rule_key(config, r) for r in config.rules])


def label_problems(config: Config, model_labels: list[str]) -> list[str]:
    """Rules that watch labels the detector never emits would never fire: refuse them."""
    emitted = config.detector.classes if config.detector.classes is not None else model_labels
    shown = ", ".join(emitted[:12]) + (", ..." if len(emitted) > 12 else "")
    problems = []
    for i, rule in enumerate(config.rules):
        field, wanted = _labels(rule)
        for label in wanted:
            if label not in emitted:
                problems.append(f"rules[{i}].{field}: {label!r} is not a class the detector "
                                f"emits ({shown})")
    return problems


def _labels(rule: RuleConfig) -> tuple[str, list[str]]:
    if isinstance(rule, IntrusionRule | LineCrossingRule | LoiteringRule):
        return "labels", list(rule.labels)
    if isinstance(rule, CrowdingRule):
        return "label", [rule.label]
    if isinstance(rule, FallRule):
        return "type", ["person"]  # both methods follow person tracks
    return "", []


def rule_key(config: Config, rule: RuleConfig) -> str:
    return json.dumps([rule.model_dump(mode="json"), rule_geometry(config, rule)],
                      sort_keys=True)


def changed_sections(old: Config, new: Config) -> list[str]:
    return [s for s in SECTIONS if getattr(old, s) != getattr(new, s)]


def changed_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two config dumps (for the log and status;
    callers pass dumps with secrets masked)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, path + ".")
        elif a != b:
            out.append(path)
    return out


def host_problems(config: Config) -> list[str]:
    """What the node needs from the machine it runs on: a state directory it can write
    (boot counter, spool, snapshots) and TLS files it can read."""
    problems: list[str] = []
    state = config.node.state_dir
    existing = next((p for p in (state, *state.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        problems.append(f"node.state_dir: {state}: {existing} is not a directory")
    elif not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == state else f"cannot be made ({existing} is " \
            "not writable)"
        problems.append(f"node.state_dir: {state} {what} by this user (uid {os.getuid()})")
    tls = config.mqtt.tls
    if tls is not None:
        for name in ("ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(tls, name)
            if path is None:
                continue
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                problems.append(f"mqtt.tls.{name}: {path}: {exc.strerror or exc}")
    return problems
