"""Frames from a folder of still images in name order: demos, tests, uploaded stills.

An unreadable image is skipped with a warning, never fatal; this never writes to the folder."""

from __future__ import annotations

import bisect
import logging
from pathlib import Path

import cv2
import numpy as np

from edge_agent.capture.frame import Image
from edge_agent.capture.source import CaptureError

log = logging.getLogger(__name__)

SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
DEFAULT_FPS = 5.0
"""Pace of a folder when the config gives no fps: slow enough to watch, fast enough to test."""


class FolderSource:
    """Walks the sorted image names once (or round and round with `loop`)."""

    live = False

    def __init__(self, folder: str, *, loop: bool = False, fps: float | None = None) -> None:
        self._folder = Path(folder)
        self._loop = loop
        self.name = f"folder:{self._folder}"
        self.fps: float | None = fps or DEFAULT_FPS
        self._names: list[str] = []
        self._last: str | None = None
        """Name of the last image delivered; a reopen (or a re-scan) continues after it."""
        self._open = False

    def open(self) -> None:
        self._names = self._scan()
        self._open = True

    def read(self) -> Image | None:
        if not self._open:
            raise CaptureError(f"{self.name} is not open")
        skipped_in_a_row = 0
        while True:
            start = 0 if self._last is None else bisect.bisect_right(self._names, self._last)
            if start >= len(self._names):
                if not self._loop:
                    return None
                self._last = None
                self._names = self._scan()  # images added while we played show up next round
                continue
            name = self._names[start]
            self._last = name
            image = cv2.imread(str(self._folder / name), cv2.IMREAD_COLOR)
            if image is not None:
                frame: Image = np.asarray(image, dtype=np.uint8)  # IMREAD_COLOR: 8-bit BGR
                return frame
            log.warning("event=image_skipped source=%s file=%s reason=unreadable", self.name, name)
            skipped_in_a_row += 1
            if skipped_in_a_row >= len(self._names):
                raise CaptureError(f"{self.name}: none of its {len(self._names)} images "
                                   "can be read")

    def close(self) -> None:
        self._open = False

    def _scan(self) -> list[str]:
        if not self._folder.is_dir():
            raise CaptureError(f"image folder not found: {self._folder}")
        names = sorted(p.name for p in self._folder.iterdir()
                       if p.suffix.lower() in SUFFIXES and p.is_file())
        if not names:
            raise CaptureError(f"image folder {self._folder} has no .jpg, .jpeg, .png or "
                               ".bmp files")
        return names
