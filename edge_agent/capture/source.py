"""The contract every frame source keeps, the error it raises, and how its name is made safe.

A source never paces, retries or threads (the grabber does); its name never holds credentials."""

from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from edge_agent.capture.frame import Image

SECRET_PARAMS = re.compile(r"pass|pwd|token|secret|key|auth|sig", re.IGNORECASE)
"""Query parameters some cameras take credentials in (`?user=admin&password=...`)."""


class CaptureError(Exception):
    """The device, stream or file cannot deliver frames; the message says why, for a human."""


class FrameSource(Protocol):
    """One camera, stream, file or folder. Built cheaply; `open()` does the real work.

    The grabber may call `open()` again after `close()` (a reconnect), so a source must
    be reusable; files and folders resume where they stopped instead of replaying."""

    name: str
    """For logs and errors; never contains credentials."""
    fps: float | None
    """Native rate when the source knows it (files), so the grabber can pace it."""
    live: bool
    """True when the device sets the pace (cameras, streams); False for files and folders."""

    def open(self) -> None:
        """Raise CaptureError with a reason a user can act on when it cannot be opened."""
        ...

    def read(self) -> Image | None:
        """The next BGR uint8 HxWx3 frame; None at the end of a finite source.

        Raise CaptureError on device loss or repeated decode failures."""
        ...

    def close(self) -> None:
        """Release the device; safe to call twice or without a successful open."""
        ...


def mask_url(source: str) -> str:
    """`rtsp://admin:pw@cam/x?password=pw` -> `rtsp://***@cam/x?password=***`.

    Passwords often hold unescaped `/`, `?` or `@`, which fool a URL parser, so everything
    up to the last `@` goes; masking too much is the safe error. Non-URLs come back as given."""
    scheme, sep, rest = source.partition("://")
    if not sep:
        return source
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    try:
        parts = urlsplit(f"{scheme}://{rest}")
    except ValueError:
        return f"{scheme}://***"
    if not parts.query:
        return f"{scheme}://{rest}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, "***" if SECRET_PARAMS.search(k) else v) for k, v in pairs],
                      safe="*/")
    return urlunsplit(parts._replace(query=query))
