"""Camera-node command handlers: get/set config, snapshot, self-test, restart.

Validates every change with the same rules as the config file; a rejected change leaves the
running config untouched. Never touches the network itself: results go back as the ack."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import tomli_w

from edge_agent.atomic import write_atomic
from edge_agent.commands import CommandError, Handler
from edge_agent.config import Config, ConfigError, parse_config, resolve_paths

LIVE_SECTIONS = frozenset({"motion", "regions", "tracker", "zones", "lines", "rules", "snapshot",
                           "gpio"})
"""Sections a running node applies at once; any other change is stored and takes effect
after a restart (the ack says `restart_required`)."""


class Node(Protocol):
    """What the handlers need from the agent (the pipeline implements it)."""

    config: Config
    config_path: Path | None
    """Relative paths in a change are taken from this file's folder, as in the file."""

    def apply_config(self, config: Config) -> None: ...
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
        if change.get("mqtt", {}).get("password") == "***":
            raise CommandError("bad_args", "args.config.mqtt.password: '***' is the mask, "
                                           "not a password")
        current = node.config.model_dump(mode="json", exclude_none=True)
        try:
            new = parse_config(merge(current, change), "args.config")
        except ConfigError as exc:
            raise CommandError("bad_args", "; ".join(exc.errors)) from None
        new = resolve_paths(new, node.config_path.parent if node.config_path else Path.cwd())
        path = overrides_path(node.config)
        try:
            _store(path, merge(_read(path), change))
        except OSError as exc:
            raise CommandError("rejected", f"cannot store the change at {path}: "
                                           f"{exc.strerror}") from None
        node.apply_config(new)
        return {"applied": sorted(k for k in change if k in LIVE_SECTIONS),
                "restart_required": sorted(k for k in change if k not in LIVE_SECTIONS)}

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
    """The file's config with stored remote changes applied; when they no longer fit the
    file (it was edited since), the file wins and the reason is returned for the log."""
    path = overrides_path(config)
    try:
        change = _read(path)
    except (OSError, ValueError) as exc:
        return config, f"{path}: unreadable, ignored ({exc})"
    if not change:
        return config, None
    try:
        merged = parse_config(merge(config.model_dump(mode="json", exclude_none=True), change),
                              str(path))
    except ConfigError as exc:
        return config, f"{path}: ignored, no longer valid with {config_path}: " + \
            "; ".join(exc.errors)
    return resolve_paths(merged, config_path.parent), None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _store(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, tomli_w.dumps(doc))
