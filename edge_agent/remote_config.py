"""Remote configuration changes on disk: `remote-config.toml` in the state directory, laid
over the node's config file at start, and set aside when it no longer builds.

The node's config file stays read-only for the service (ProtectSystem=strict) and remains
the technician's; what operators change remotely lives here, separately."""

from __future__ import annotations

import logging
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from edge_agent.atomic import write_atomic
from edge_agent.config import Config, ConfigError, parse_config, resolve_paths

log = logging.getLogger(__name__)


def merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of tables; lists and values in `change` replace those in `base`."""
    out = dict(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


LOCAL_ONLY = (("snapshot", "redact_people"), ("snapshot", "redact_classes"),
              ("snapshot", "privacy_zones"), ("privacy", None))
"""Settings no remote change may touch: redaction, privacy polygons, and the camera's
purpose, operator and retention. Weakening them is a decision made at the camera, by
whoever answers for it, in its file."""


def local_only_changes(old: Config, new: Config) -> list[str]:
    """The local-only settings that differ between two configs, as field paths."""
    out = []
    for section, name in LOCAL_ONLY:
        a, b = getattr(old, section), getattr(new, section)
        if name is None and a != b:
            out.append(section)
        elif name is not None and getattr(a, name) != getattr(b, name):
            out.append(f"{section}.{name}")
    return out


def overrides_path(config: Config) -> Path:
    """Remote changes live in the state directory: the node's config file stays read-only
    for the service (ProtectSystem=strict) and remains the technician's."""
    return config.node.state_dir / "remote-config.toml"


def with_overrides(config: Config, config_path: Path) -> tuple[Config, str | None]:
    """The file's config with stored remote changes applied; when they cannot be read or no
    longer fit the file (it was edited since), the file wins and the reason is returned."""
    path = overrides_path(config)
    try:
        change = read(path)
    except (OSError, ValueError) as exc:
        return config, f"{path}: unreadable: {exc}"
    if not change:
        return config, None
    try:
        merged = parse_config(merge(config.model_dump(mode="json", exclude_none=True), change),
                              str(path))
    except ConfigError as exc:
        return config, f"{path}: no longer valid with {config_path}: " + "; ".join(exc.errors)
    merged = resolve_paths(merged, config_path.parent)
    local = local_only_changes(config, merged)
    if local:  # stored before privacy settings were local-only: the file decides
        return config, f"{path}: changes privacy settings the file config alone may set " \
            f"({', '.join(local)})"
    return merged, None


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


def read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}


def store(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, tomli_w.dumps(doc))
