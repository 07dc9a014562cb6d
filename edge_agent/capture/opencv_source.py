"""Frames through OpenCV: a V4L2 device index, an RTSP/HTTP stream URL or a video file.

Never opens a window, never reconnects by itself, never lets URL credentials reach a log."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_agent.capture.frame import Image
from edge_agent.capture.source import CaptureError, mask_url

log = logging.getLogger(__name__)

READ_ATTEMPTS = 3
"""Consecutive failed reads before the source counts as lost; a single bad frame in a file
or a hiccup in a stream is skipped."""
STREAM_TIMEOUT_MS = 5000
"""FFmpeg waits this long to open or read a network stream; without it a dead camera can
block the capture thread (and stop()) for half a minute."""
END_TOLERANCE = 0.01
"""Containers often estimate their frame count; a read failure this close to it (as a
fraction, at least one frame) is the end of the file, not a broken file."""


class OpenCVSource:
    """One `cv2.VideoCapture`; which kind of input it is follows from `source`."""

    def __init__(self, source: str, *, loop: bool = False, width: int | None = None,
                 height: int | None = None) -> None:
        self._source = source
        self._loop = loop
        self._width = width
        self._height = height
        self._cap: cv2.VideoCapture | None = None
        self._device = source.isdigit()
        self._url = "://" in source
        self.live = self._device or self._url
        self.name = self._describe()
        self.fps: float | None = None
        self._position = 0
        """Next frame of a file; a reopen resumes here so no frame is delivered twice."""

    def _describe(self) -> str:
        if not self._device:
            return mask_url(self._source)
        return f"/dev/video{self._source}" if sys.platform == "linux" else f"camera:{self._source}"

    # -- FrameSource -----------------------------------------------------------------------
    def open(self) -> None:
        self.close()
        if self._device:
            cap = self._open_device()
        elif self._url:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            cap = cv2.VideoCapture(self._source, cv2.CAP_FFMPEG, params)
            if not cap.isOpened():
                cap.release()
                raise CaptureError(f"cannot open stream {self.name} (unreachable, refused or "
                                   "not a video stream)")
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        else:
            cap = self._open_file()
        self._cap = cap

    def read(self) -> Image | None:
        for _ in range(READ_ATTEMPTS):
            cap = self._cap
            if cap is None:
                raise CaptureError(f"{self.name} is not open")
            ok, image = cap.read()
            if ok and image is not None:
                self._position += 1
                return _as_bgr(image)
            if not self.live:
                ended = self._at_end(cap)
                if ended and not self._loop:
                    return None
                if ended:
                    self._rewind(cap)
                    continue
                if cap.grab():  # skip the frame that would not decode
                    self._position += 1
        if self.live:
            raise CaptureError(f"{self.name}: no frame after {READ_ATTEMPTS} reads "
                               "(device unplugged or stream stopped)")
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if self._cap is not None else 0
        raise CaptureError(f"{self.name}: cannot decode frame {self._position} of {count} "
                           "(file truncated or corrupt)")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    # -- helpers ---------------------------------------------------------------------------
    def _open_device(self) -> cv2.VideoCapture:
        backend = cv2.CAP_V4L2 if sys.platform == "linux" else cv2.CAP_ANY
        cap = cv2.VideoCapture(int(self._source), backend)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"cannot open camera {self.name} (missing, in use by another "
                               "process, or no permission: is the user in group 'video'?)")
        if self._width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._width)
        if self._height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._height)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        want = (self._width or got[0], self._height or got[1])
        if got != want:
            log.warning("event=camera_size_differs source=%s requested=%dx%d actual=%dx%d",
                        self.name, want[0], want[1], got[0], got[1])
        return cap

    def _open_file(self) -> cv2.VideoCapture:
        path = Path(self._source)
        if not path.is_file():
            raise CaptureError(f"video file not found: {path}")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"cannot open video file {path} (unknown format or codec)")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else None
        if self._position > 0 and not cap.set(cv2.CAP_PROP_POS_FRAMES, self._position):
            log.warning("event=file_resume_failed source=%s frame=%d", self.name, self._position)
            self._position = 0
        return cap

    def _at_end(self, cap: cv2.VideoCapture) -> bool:
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        if not math.isfinite(count) or count <= 0:
            return True  # nothing to compare with: a failed read is all we know
        position = max(self._position, cap.get(cv2.CAP_PROP_POS_FRAMES))
        return bool(position >= count - max(1.0, count * END_TOLERANCE))

    def _rewind(self, cap: cv2.VideoCapture) -> None:
        self._position = 0
        if not cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            cap.release()
            self._cap = None
            self._cap = self._open_file()


def _as_bgr(raw: cv2.typing.MatLike) -> Image:
    """Some devices deliver grey or BGRA frames; downstream rooms expect three channels."""
    if raw.ndim == 2:
        raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    elif raw.shape[2] == 4:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2BGR)
    image: Image = np.asarray(raw, dtype=np.uint8)  # no copy: OpenCV already gives uint8
    return image
