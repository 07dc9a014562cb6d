"""Frames from a Raspberry Pi camera module through picamera2 (libcamera).

Imports picamera2 only inside open(): must never make the package unusable without it."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edge_agent.capture.frame import Image
from edge_agent.capture.source import CaptureError

log = logging.getLogger(__name__)

INSTALL_HINT = ("picamera2 is not installed: pip install 'safecity-edge[pi]' on the Pi "
                "(Raspberry Pi OS also ships it as the apt package python3-picamera2; a venv "
                "then needs --system-site-packages to see libcamera)")
PIXEL_FORMAT = "RGB888"
"""libcamera names formats by word order: picamera2's RGB888 arrives in numpy as B, G, R
per pixel, which is what OpenCV and our detectors expect."""


class PicameraSource:
    """The first CSI camera in a video configuration (one main stream, BGR in numpy)."""

    live = True

    def __init__(self, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, camera: int = 0) -> None:
        self._width = width
        self._height = height
        self._camera_num = camera
        self.fps: float | None = fps
        self.name = f"picamera2:{camera}"
        self._cam: Any = None

    def open(self) -> None:
        self.close()
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CaptureError(INSTALL_HINT) from exc
        try:
            cam = Picamera2(self._camera_num)
        except Exception as exc:  # libcamera reports a missing/busy camera in many ways
            raise CaptureError(f"cannot open {self.name} (ribbon cable, camera enabled, "
                               f"or in use by another process?): {exc}") from exc
        try:
            main: dict[str, Any] = {"format": PIXEL_FORMAT}
            if self._width is not None and self._height is not None:
                main["size"] = (self._width, self._height)
            controls: dict[str, Any] = {}
            if self.fps is not None:
                controls["FrameRate"] = self.fps
            cam.configure(cam.create_video_configuration(main=main, controls=controls))
            cam.start()
        except Exception as exc:
            _shutdown(cam)
            raise CaptureError(f"cannot start {self.name}: {exc}") from exc
        self._cam = cam

    def read(self) -> Image | None:
        if self._cam is None:
            raise CaptureError(f"{self.name} is not open")
        try:
            array = self._cam.capture_array("main")
        except Exception as exc:
            raise CaptureError(f"{self.name}: capture failed: {exc}") from exc
        image: Image = np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)
        return image

    def close(self) -> None:
        if self._cam is not None:
            _shutdown(self._cam)
            self._cam = None


def _shutdown(cam: Any) -> None:
    """Stop and release; a camera that is already gone must not turn close() into a crash."""
    for step in ("stop", "close"):
        try:
            getattr(cam, step)()
        except Exception as exc:
            log.debug("event=picamera_%s_failed reason=%s", step, exc)
