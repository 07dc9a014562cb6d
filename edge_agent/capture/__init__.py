"""Frame sources (picamera2, OpenCV device/stream/file, image folder) and the frame grabber.

Upstream of every room: never imports detection, tracking, events or uplink code."""

from __future__ import annotations

from edge_agent.capture.folder_source import FolderSource
from edge_agent.capture.frame import Frame
from edge_agent.capture.grabber import FrameGrabber
from edge_agent.capture.opencv_source import OpenCVSource
from edge_agent.capture.picamera_source import PicameraSource
from edge_agent.capture.source import CaptureError, FrameSource, mask_url
from edge_agent.config import CameraConfig

__all__ = ["CaptureError", "Frame", "FrameGrabber", "FrameSource", "open_source", "mask_url"]


def open_source(cfg: CameraConfig) -> FrameSource:
    """Build the source the config names; it is opened later, by the grabber's thread, so a
    camera that is missing at start-up is retried instead of failing the agent."""
    if cfg.kind == "picamera2":
        return PicameraSource(width=cfg.width, height=cfg.height, fps=cfg.fps)
    if cfg.kind == "folder":
        return FolderSource(cfg.source, loop=cfg.loop, fps=cfg.fps)
    return OpenCVSource(cfg.source, loop=cfg.loop, width=cfg.width, height=cfg.height)
