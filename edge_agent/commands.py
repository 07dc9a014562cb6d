"""Commands to a camera node: parsing and dispatch (every payload, however malformed, gets
exactly one acknowledgement; nothing raises out), and the handlers themselves (get/set
config, snapshot, self-test, restart).

A change is validated with the same rules as the config file and built (models loaded,
labels checked, rules constructed) before it is stored or acked: a rejected change leaves
the running config and the stored overrides untouched. Never touches the network itself:
results go back as the ack."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge_agent import remote_config
from edge_agent.changes import BuildError, Built, changed_fields, changed_sections
from edge_agent.config import Config, ConfigError, parse_config, resolve_paths
from edge_agent.uplink import messages
from edge_agent.uplink.messages import Identity

log = logging.getLogger(__name__)

MAX_PAYLOAD = 16 * 1024
_NAME = re.compile(r"^[a-z_]{1,32}$")


class CommandError(Exception):
    """Raised by a handler to reject a command with an error code the sender can act on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Handler = Callable[[dict[str, Any]], Any]

BUTTONS = ("snapshot", "self_test", "restart")
"""Commands a dashboard may press on `button/<command>` topics (Home Assistant's buttons);
everything else needs the `cmd` topic, which the broker grants to operators only."""


class Commands:
    def __init__(self, ident: Identity, handlers: dict[str, Handler]) -> None:
        self.ident = ident
        self.handlers = {"ping": lambda args: {"pong": True}} | handlers

    def handle(self, payload: bytes, only: str | None = None) -> dict[str, Any]:
        """Return the acknowledgement document for one raw payload. `only`: it came on the
        button topic of that command, and runs only if it is that command and a button."""
        now = time.time()

        def fail(cmd_id: str | None, cmd: str | None, code: str, msg: str) -> dict[str, Any]:
            return messages.ack(self.ident, now, cmd_id, cmd, False, error=(code, msg))

        if len(payload) > MAX_PAYLOAD:
            return fail(None, None, "too_large",
                        f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD}")
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return fail(None, None, "malformed", f"payload is not JSON: {exc}")
        if not isinstance(doc, dict):
            return fail(None, None, "malformed", "payload must be a JSON object")
        raw_id = doc.get("id")
        cmd_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= 64 else None
        if cmd_id is None:
            return fail(None, None, "malformed", "id: must be a string of 1-64 characters")
        cmd = doc.get("cmd")
        if not isinstance(cmd, str) or not _NAME.match(cmd):
            return fail(cmd_id, None, "malformed", "cmd: must be a command name")
        args = doc.get("args", {})
        if not isinstance(args, dict):
            return fail(cmd_id, cmd, "bad_args", "args: must be a JSON object")
        unknown = set(doc) - {"id", "cmd", "args"}
        if unknown:
            return fail(cmd_id, cmd, "malformed", f"unknown fields: {sorted(unknown)}")
        if only is not None and (cmd != only or cmd not in BUTTONS):
            return fail(cmd_id, cmd, "rejected",
                        f"{cmd}: not allowed on button/{only} (buttons: {', '.join(BUTTONS)};"
                        " a button topic runs only the command it names)")
        handler = self.handlers.get(cmd)
        if handler is None:
            return fail(cmd_id, cmd, "unknown_command",
                        f"unknown command {cmd!r}; known: {sorted(self.handlers)}")
        try:
            result = handler(args)
        except CommandError as exc:
            return fail(cmd_id, cmd, exc.code, exc.message)
        except Exception as exc:  # a handler's bug: the sender still learns which command
            log.exception("event=command_failed id=%s cmd=%s", cmd_id, cmd)
            return fail(cmd_id, cmd, "internal", f"{cmd} failed: {type(exc).__name__}")
        return messages.ack(self.ident, now, cmd_id, cmd, True, result=result)


# -- the camera node's handlers ---------------------------------------------------------
LIVE_SECTIONS = frozenset({"motion", "regions", "tracker", "zones", "lines", "rules",
                           "snapshot"})
"""Sections a running node applies at once; any other change is stored and takes effect
after a restart (the ack says `restart_required`). `gpio` is not live: pins are claimed once,
at start."""


class Node(Protocol):
    """What the handlers need from the node (edge_agent.agent.Agent implements it)."""

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
            new = parse_config(remote_config.merge(current, change), "args.config")
        except ConfigError as exc:
            raise CommandError("bad_args", "; ".join(exc.errors)) from None
        new = resolve_paths(new, node.config_path.parent if node.config_path else Path.cwd())
        old = node.config
        local = remote_config.local_only_changes(old, new)
        if local:
            raise CommandError("rejected", "; ".join(
                f"{f}: a privacy setting, changed in the node's file config only" for f in local))
        sections = changed_sections(old, new)
        if not sections:
            return {"applied": [], "restart_required": [], "changed": []}
        try:
            built = node.build(new)
        except BuildError as exc:
            raise CommandError("rejected", "; ".join(exc.problems)) from None
        path = remote_config.overrides_path(node.config)
        try:
            stored = remote_config.read(path)
        except (OSError, ValueError):
            stored = {}  # unreadable: this change replaces it
        try:
            remote_config.store(path, remote_config.merge(stored, change))
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

    table: dict[str, Handler] = {
        "get_config": get_config, "set_config": set_config, "snapshot": snapshot,
        "self_test": self_test, "restart": restart}
    return table


