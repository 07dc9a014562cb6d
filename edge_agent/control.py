"""Camera-node command handlers: get/set config, snapshot, self-test, restart.

A change is validated with the same rules as the config file and built (models loaded,
labels checked, rules constructed) before it is stored or acked: a rejected change leaves
the running config and the stored overrides untouched. Never touches the network itself:
results go back as the ack."""

from __future__ import annotations

import logging
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import tomli_w

from edge_agent.atomic import write_atomic
from edge_agent.changes import BuildError, Built, changed_fields, changed_sections
from edge_agent.commands import CommandError, Handler
from edge_agent.config import Config, ConfigError, parse_config, resolve_paths

log = logging.getLogger(__name__)

LIVE_SECTIONS = frozenset({"motion", "regions", "tracker", "zones", "lines", "rules",
                           "snapshot"})
"""Sections a running node applies at once; any other change is stored and takes effect
after a restart (the ack says `restart_required`). `gpio` is not live: pins are claimed once,
at start."""


class Node(Protocol):
    """What the handlers need from the agent (the pipeline implements it)."""

    config: Config
    config_path: Path | None
    """Relative paths in a change are taken from this file's folder, as in the file."""

    def build(self, config: Config) -> Built:
        """Build `config` as the node would run it (raises BuildError)."""
        ...

    def apply_config(self, config: Config, built: Built, fields: list[str]) -> None: ...
    def take_snapshot(self) -> dict[str, Any]: ...
    def self_test(self) -> dict[str, Any]: ...
    def request_restart(self) -> None: ...


def public_config(config: Config) -> dict[str, Any]:
    """The config as loaded, with secrets masked: it leaves the node."""
    doc = config.model_dump(mode="json", exclude_none=True)
    if doc["mqtt"].get("password"):
        doc["mqtt"]["password"] = "***"
    return doc


def merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of tables; lists and values in `change` replace those in `base`."""
    out = dict(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def handlers(node: Node) -> dict[str, Handler]:
    def get_config(args: dict[str, Any]) -> Any:
        return public_config(node.config)

    def set_config(args: dict[str, Any]) -> Any:
        change = args.get("config")
        if not isinstance(change, dict) or not change:
            raise CommandError("bad_args", "args.config: must be a non-empty object of "
                                           "config sections to change")
        mqtt = change.get("mqtt")
        if isinstance(mqtt, dict) and mqtt.get("password") == "***":
            raise CommandError("bad_args", "args.config.mqtt.password: '***' is the mask, "
                                           "not a password")
        current = node.config.model_dump(mode="json", exclude_none=True)
        try:
            new = parse_config(merge(current, change), "args.config")
        except ConfigError as exc:
            raise CommandError("bad_args", "; ".join(exc.errors)) from None
        new = resolve_paths(new, node.config_path.parent if node.config_path else Path.cwd())
        old = node.config
        sections = changed_sections(old, new)
        if not sections:
            return {"applied": [], "restart_required": [], "changed": []}
        try:
            built = node.build(new)
        except BuildError as exc:
            raise CommandError("rejected", "; ".join(exc.problems)) from None
        path = overrides_path(node.config)
        try:
            stored = _read(path)
        except (OSError, ValueError):
            stored = {}  # unreadable: this change replaces it
        try:
            _store(path, merge(stored, change))
        except OSError as exc:
            raise CommandError("rejected", f"cannot store the change at {path}: "
                                           f"{exc.strerror}") from None
        fields = changed_fields(public_config(old), public_config(new))
        node.apply_config(new, built, fields)
        return {"applied": [s for s in sections if s in LIVE_SECTIONS],
                "restart_required": [s for s in sections if s not in LIVE_SECTIONS],
                "changed": fields}

    def snapshot(args: dict[str, Any]) -> Any:
        return node.take_snapshot()

    def self_test(args: dict[str, Any]) -> Any:
        return node.self_test()

    def restart(args: dict[str, Any]) -> Any:
        node.request_restart()
        return {"restarting": True}

    table: dict[str, Callable[[dict[str, Any]], Any]] = {
        "get_config": get_config, "set_config": set_config, "snapshot": snapshot,
        "self_test": self_test, "restart": restart}
    return table


def overrides_path(config: Config) -> Path:
    """Remote changes live in the state directory: the node's config file stays read-only
    for the service (ProtectSystem=strict) and remains the technician's."""
    return config.node.state_dir / "remote-config.toml"


def with_overrides(config: Config, config_path: Path) -> tuple[Config, str | None]:
    """The file's config with stored remote changes applied; when they cannot be read or no
    longer fit the file (it was edited since), the file wins and the reason is returned."""
    path = overrides_path(config)
    try:
        change = _read(path)
    except (OSError, ValueError) as exc:
        return config, f"{path}: unreadable: {exc}"
    if not change:
        return config, None
    try:
        merged = parse_config(merge(config.model_dump(mode="json", exclude_none=True), change),
                              str(path))
    except ConfigError as exc:
        return config, f"{path}: no longer valid with {config_path}: " + "; ".join(exc.errors)
    return resolve_paths(merged, config_path.parent), None


def set_aside(config: Config, reason: str) -> Path | None:
    """Move stored remote changes that cannot run out of the way, so the node starts on its
    file config instead of failing every start; they stay on disk for a technician. Returns
    where they went (None if they could not be moved: logged)."""
    path = overrides_path(config)
    dest = path.with_name(f"remote-config.rejected-{time.strftime('%Y%m%dT%H%M%S')}.toml")
    try:
        path.rename(dest)
    except OSError as exc:
        log.error("event=remote_config_set_aside_failed path=%s error=%r", path,
                  exc.strerror or str(exc))
        return None
    log.warning("event=remote_config_set_aside path=%s kept_as=%s reason=%r", path, dest.name,
                reason)
    return dest


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _store(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, tomli_w.dumps(doc))
