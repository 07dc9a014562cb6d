"""Capture room: sources on real video and real image files, and the latest-frame grabber.

No OpenCV mocks: the only test double is a FrameSource at the device boundary."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.capture import CaptureError, FrameGrabber, open_source
from edge_agent.capture.frame import Frame, Image
from edge_agent.config import CameraConfig

VTEST_FRAMES = 795


class Statuses:
    """Collects on_status calls from the capture thread and lets a test wait for one."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, state: str) -> None:
        with self._cond:
            self.seen.append(state)
            self._cond.notify_all()

    def wait_for(self, state: str, timeout: float = 5.0, count: int = 1) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self.seen.count(state) >= count, timeout)
        assert ok, f"no {state!r} (x{count}) within {timeout}s; saw {self.seen}"


def grabber_for(cfg: CameraConfig, source: Any = None) -> tuple[FrameGrabber, Statuses]:
    statuses = Statuses()
    return FrameGrabber(source or open_source(cfg), cfg, on_status=statuses), statuses


def drain(grabber: FrameGrabber, until: Callable[[list[Frame]], bool],
          deadline_s: float = 10.0) -> list[Frame]:
    got: list[Frame] = []
    end = time.monotonic() + deadline_s
    while not until(got) and time.monotonic() < end:
        frame = grabber.get(timeout=0.5)
        if frame is not None:
            got.append(frame)
    return got


def write_clip(src: Path, dst: Path, frames: int) -> None:
    """The first `frames` frames of `src` as MJPG; written aside and renamed into place so a
    watcher never opens half a file."""
    cap = cv2.VideoCapture(str(src))
    partial = dst.with_name("partial-" + dst.name)
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (768, 576))
    for _ in range(frames):
        ok, image = cap.read()
        assert ok
        writer.write(image)
    writer.release()
    cap.release()
    os.replace(partial, dst)


@pytest.fixture
def short_clip(vtest_path: Path, tmp_path: Path) -> Path:
    clip = tmp_path / "short.avi"
    write_clip(vtest_path, clip, 20)
    return clip


# -- files ----------------------------------------------------------------------------------
def test_offline_mode_delivers_every_frame_in_order_then_ends(vtest_path: Path) -> None:
    grabber, statuses = grabber_for(CameraConfig(source=str(vtest_path), realtime=False))
    indexes: list[int] = []
    times: list[float] = []
    first: Frame | None = None
    grabber.start()
    try:
        while (frame := grabber.get(timeout=2.0)) is not None:
            first = first or frame  # keep one image, not 795 of them (1.3 MB each)
            indexes.append(frame.index)
            times.append(frame.monotonic)
    finally:
        grabber.stop()
    assert indexes == list(range(VTEST_FRAMES))
    assert first is not None and first.image.shape == (576, 768, 3)
    assert first.image.dtype == np.uint8
    assert times == sorted(times)
    assert statuses.seen == ["online", "ended"]
    assert grabber.frames == VTEST_FRAMES and grabber.dropped == 0


def test_realtime_keeps_only_the_newest_frame_for_a_slow_consumer(vtest_path: Path) -> None:
    cfg = CameraConfig(source=str(vtest_path), realtime=True, speed=10.0)  # 100 frames/s
    grabber, _ = grabber_for(cfg)
    got: list[Frame] = []
    latencies: list[float] = []
    grabber.start()
    t0 = time.monotonic()
    try:
        while len(got) < 8:
            frame = grabber.get(timeout=1.0)
            assert frame is not None
            latencies.append(time.monotonic() - frame.monotonic)
            got.append(frame)
            time.sleep(0.2)  # a detector slower than the camera
        elapsed = time.monotonic() - t0
        captured = grabber.frames
    finally:
        grabber.stop()
    indexes = [f.index for f in got]
    assert indexes == sorted(set(indexes)), "a frame older than the previous one came back"
    assert captured > len(got) and grabber.dropped > 0
    assert max(latencies) < 0.2, latencies
    assert captured <= elapsed * 100 * 1.2 + 2, "realtime pacing ran faster than fps * speed"
    assert captured >= elapsed * 100 * 0.4, "realtime pacing far slower than fps * speed"


def test_loop_replays_a_short_clip_past_its_end(short_clip: Path) -> None:
    grabber, statuses = grabber_for(CameraConfig(source=str(short_clip), loop=True,
                                                 realtime=False))
    grabber.start()
    try:
        got = drain(grabber, lambda g: len(g) >= 50)
    finally:
        grabber.stop()
    assert [f.index for f in got] == list(range(50))
    assert np.array_equal(got[20].image, got[0].image)
    assert np.array_equal(got[45].image, got[5].image)
    assert "ended" not in statuses.seen


def test_missing_video_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.avi"
    with pytest.raises(CaptureError, match="nope.avi"):
        open_source(CameraConfig(source=str(missing))).open()


def test_truncated_file_is_a_failure_not_an_end(vtest_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "truncated.avi"
    data = vtest_path.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    source = open_source(CameraConfig(source=str(broken), realtime=False))
    source.open()
    try:
        frames = 0
        with pytest.raises(CaptureError, match=r"cannot decode frame \d+ of 795"):
            while source.read() is not None:
                frames += 1
        assert 100 < frames < VTEST_FRAMES
    finally:
        source.close()


# -- folders --------------------------------------------------------------------------------
def test_folder_skips_a_corrupt_image_and_keeps_name_order(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shades = {"c.jpg": 160, "a.jpg": 10, "d.png": 210, "b.jpeg": 60}
    for name, shade in shades.items():
        assert cv2.imwrite(str(tmp_path / name), np.full((48, 64, 3), shade, np.uint8))
    (tmp_path / "b2_corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    grabber, statuses = grabber_for(CameraConfig(kind="folder", source=str(tmp_path),
                                                 realtime=False))
    with caplog.at_level(logging.WARNING, logger="edge_agent.capture"):
        grabber.start()
        try:
            got = drain(grabber, lambda g: "ended" in statuses.seen and len(g) >= 4,
                        deadline_s=5.0)
        finally:
            grabber.stop()
    assert [round(float(f.image.mean())) for f in got] == [10, 60, 160, 210]
    assert statuses.seen == ["online", "ended"]
    assert "b2_corrupt.jpg" in caplog.text


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p], ids=["missing", "empty"])
def test_empty_or_missing_folder_is_an_error(tmp_path: Path,
                                             make: Callable[[Path], Path]) -> None:
    with pytest.raises(CaptureError, match="folder"):
        open_source(CameraConfig(kind="folder", source=str(make(tmp_path)))).open()


# -- camera loss ----------------------------------------------------------------------------
def test_a_source_that_appears_later_goes_online(vtest_path: Path, tmp_path: Path) -> None:
    clip = tmp_path / "late.avi"
    cfg = CameraConfig(source=str(clip), realtime=False, reconnect_min_s=0.05,
                       reconnect_max_s=0.2)
    grabber, statuses = grabber_for(cfg)
    grabber.start()
    try:
        statuses.wait_for("offline")
        assert grabber.get(timeout=0.3) is None
        write_clip(vtest_path, clip, 5)
        statuses.wait_for("online")
        got = drain(grabber, lambda g: len(g) >= 5)
    finally:
        grabber.stop()
    assert [f.index for f in got] == list(range(5))
    assert statuses.seen == ["offline", "online", "ended"]


class FlakyCamera:
    """A live camera that dies after `frames_per_life` frames and opens fine again."""

    live = True
    fps: float | None = None

    def __init__(self, frames_per_life: int = 10, opens_fail: bool = False) -> None:
        self.name = "flaky-camera"
        self.frames_per_life = frames_per_life
        self.opens_fail = opens_fail
        self.opens = 0
        self.closes = 0
        self._left = 0

    def open(self) -> None:
        self.opens += 1
        if self.opens_fail:
            raise CaptureError("no such camera")
        self._left = self.frames_per_life

    def read(self) -> Image | None:
        if self._left <= 0:
            raise CaptureError("device unplugged")
        self._left -= 1
        time.sleep(0.005)  # a camera sets its own pace
        return np.full((8, 8, 3), self.opens, np.uint8)

    def close(self) -> None:
        self.closes += 1


def test_a_stream_that_dies_reconnects_and_frames_continue() -> None:
    camera = FlakyCamera(frames_per_life=10)
    cfg = CameraConfig(reconnect_min_s=0.05, reconnect_max_s=0.1)
    grabber, statuses = grabber_for(cfg, camera)
    grabber.start()
    try:
        statuses.wait_for("online", count=3)
        got = drain(grabber, lambda g: len(g) >= 3 and g[-1].index > 25)
    finally:
        grabber.stop()
    assert statuses.seen[:4] == ["online", "offline", "online", "offline"]
    assert camera.opens >= 3 and camera.closes >= camera.opens
    assert got[-1].index > 25 and got[-1].image[0, 0, 0] >= 2, "frames from a later life"


def test_a_crash_of_the_capture_code_restarts_capture_without_spinning() -> None:
    camera = FlakyCamera(frames_per_life=1000)
    cfg = CameraConfig(reconnect_min_s=0.5, reconnect_max_s=1.0)
    grabber, statuses = grabber_for(cfg, camera)
    publish = grabber._publish
    crashes = iter([True])

    def crash_once(frame: Frame) -> None:
        if next(crashes, False):
            raise RuntimeError("a bug in the capture code")
        publish(frame)

    grabber._publish = crash_once  # type: ignore[method-assign]
    grabber.start()
    try:
        statuses.wait_for("offline")
        t0 = time.monotonic()
        assert grabber.get(timeout=0.3) is None
        assert time.monotonic() - t0 >= 0.25, "get() waits out the back-off, no busy loop"
        got = drain(grabber, lambda g: len(g) >= 5)
    finally:
        grabber.stop()
    assert len(got) >= 5, "capture started again by itself"
    assert grabber.restarts == 1 and statuses.seen[:3] == ["online", "offline", "online"]
    assert camera.opens == 2 and camera.closes >= 1


def test_stop_interrupts_a_long_backoff_promptly() -> None:
    camera = FlakyCamera(opens_fail=True)
    cfg = CameraConfig(reconnect_min_s=20.0, reconnect_max_s=30.0)
    grabber, statuses = grabber_for(cfg, camera)
    grabber.start()
    statuses.wait_for("offline")
    t0 = time.monotonic()
    grabber.stop()
    assert time.monotonic() - t0 < 1.0
    assert grabber.get(timeout=0.1) is None
    assert camera.opens == 1 and camera.closes >= 1


def test_a_failing_status_callback_does_not_kill_capture(short_clip: Path) -> None:
    def explode(state: str) -> None:
        raise RuntimeError("listener bug")

    cfg = CameraConfig(source=str(short_clip), realtime=False)
    grabber = FrameGrabber(open_source(cfg), cfg, on_status=explode)
    grabber.start()
    try:
        got = drain(grabber, lambda g: len(g) >= 20, deadline_s=5.0)
    finally:
        grabber.stop()
    assert len(got) == 20


# -- names and optional hardware ------------------------------------------------------------
def test_stream_credentials_never_reach_names_or_errors() -> None:
    url = "rtsp://admin:s3cret@127.0.0.1:1/stream1?channel=1&password=hunter2"
    source = open_source(CameraConfig(source=url))
    assert "s3cret" not in source.name and "admin" not in source.name
    assert "hunter2" not in source.name
    assert "127.0.0.1:1/stream1" in source.name and "channel=1" in source.name
    assert source.live
    with pytest.raises(CaptureError) as err:  # nothing listens on port 1: refused at once
        source.open()
    assert "s3cret" not in str(err.value) and "hunter2" not in str(err.value)
    unescaped = open_source(CameraConfig(source="rtsp://admin:pa/ss?@cam.local/live"))
    assert unescaped.name == "rtsp://***@cam.local/live"


def test_device_index_names_the_v4l2_device() -> None:
    source = open_source(CameraConfig(source="0"))
    assert source.live
    if sys.platform == "linux":
        assert source.name == "/dev/video0"


def test_no_source_ever_opens_audio(vtest_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = open_source(CameraConfig(source=str(vtest_path)))
    source.open()
    try:
        assert source.read() is not None
        cap = source._cap  # type: ignore[attr-defined]
        assert cap.get(cv2.CAP_PROP_AUDIO_STREAM) == -1, "the audio stream is not opened"
    finally:
        source.close()

    calls: list[str] = []

    class FakeCamera:  # records what the node asks of picamera2
        def __init__(self, num: int) -> None:
            calls.append("open")

        def __getattr__(self, name: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                calls.append(name)
                return np.zeros((4, 4, 4), np.uint8) if name == "capture_array" else {}
            return call

    fake = type(sys)("picamera2")
    fake.Picamera2 = FakeCamera  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", fake)
    cam = open_source(CameraConfig(kind="picamera2", width=4, height=4, fps=5))
    cam.open()
    cam.read()
    cam.close()
    assert calls == ["open", "create_video_configuration", "configure", "start",
                     "capture_array", "stop", "close"], "no encoder, no recording, no audio"


def test_picamera2_missing_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as on a non-Pi machine
    source = open_source(CameraConfig(kind="picamera2", width=640, height=480))
    assert source.live and "picamera2" in source.name
    with pytest.raises(CaptureError, match=r"pip install 'safecity-edge\[pi\]'"):
        source.open()
    source.close()


def test_a_reopened_file_resumes_instead_of_replaying(short_clip: Path) -> None:
    source = open_source(CameraConfig(source=str(short_clip), realtime=False))
    source.open()
    first = [source.read() for _ in range(8)]
    source.close()
    source.open()  # what the grabber does after a read failure
    try:
        resumed = source.read()
    finally:
        source.close()
    reference = cv2.VideoCapture(str(short_clip))
    frames = [reference.read()[1] for _ in range(9)]
    reference.release()
    assert all(a is not None and np.array_equal(a, b)
               for a, b in zip(first, frames, strict=False))
    assert resumed is not None and np.array_equal(resumed, frames[8])
