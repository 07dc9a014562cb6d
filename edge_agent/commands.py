"""Parses commands from the node's command topic and dispatches them to handlers.

Every payload, however malformed, yields exactly one acknowledgement; nothing raises out."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

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


class Commands:
    def __init__(self, ident: Identity, handlers: dict[str, Handler]) -> None:
        self.ident = ident
        self.handlers = {"ping": lambda args: {"pong": True}} | handlers

    def handle(self, payload: bytes) -> dict[str, Any]:
        """Return the acknowledgement document for one raw payload."""
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
