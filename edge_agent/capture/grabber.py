"""A capture thread that keeps only the newest frame, paces files, and reconnects lost cameras.

Never queues frames, never raises out of its thread, never lets a camera fault or a crash of
its own code stop capture for good."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from edge_agent.capture.frame import Frame
from edge_agent.capture.source import FrameSource
from edge_agent.config import CameraConfig
from edge_agent.logs import quote

log = logging.getLogger(__name__)

FALLBACK_FPS = 25.0
"""Pace of a file that does not say its rate and has no configured fps."""
JOIN_TIMEOUT_S = 3.0
"""stop() waits this long for the thread; a read stuck in a driver cannot hold the agent."""
JITTER = 0.2
"""Reconnect delays vary by +-20% so cameras that fell together do not retry together."""

StatusCallback = Callable[[str], None]


class FrameGrabber:
    """Owns the source from start() to stop(); `get()` hands out the newest frame.

    With `realtime` off a file is read without pacing and without dropping: the reader
    waits until the previous frame was taken, so offline runs and tests see every frame."""

    def __init__(self, source: FrameSource, cfg: CameraConfig,
                 on_status: StatusCallback) -> None:
        self._source = source
        self._cfg = cfg
        self._on_status = on_status
        self._handoff = not cfg.realtime and not source.live
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._done = False
        self._woken = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: str | None = None
        self._random = random.Random()
        self.frames = 0
        self.dropped = 0
        self.restarts = 0
        """Times the capture code crashed and was started again."""

    # -- consumer side -----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("FrameGrabber.start() called twice")
        self._thread = threading.Thread(target=self._run, name=f"capture {self._source.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is None:
            self._close_source()
            return
        thread.join(JOIN_TIMEOUT_S)
        if thread.is_alive():
            # The thread closes the source itself once the blocking read returns; closing it
            # from here, under a read in progress, could crash the native capture code.
            log.warning("event=capture_stop_timeout source=%s waited_s=%.1f",
                        self._source.name, JOIN_TIMEOUT_S)

    def get(self, timeout: float) -> Frame | None:
        """The newest frame not returned before; None after `timeout`, once the source ended,
        or early after `wake()`."""
        with self._cond:
            if not self._cond.wait_for(
                    lambda: self._slot is not None or self._done or self._woken, timeout):
                return None
            self._woken = False
            frame, self._slot = self._slot, None
            self._cond.notify_all()
            return frame

    def wake(self) -> None:
        """Make a waiting (or the next) `get` return now: the consumer has other work that
        is ready (a finished inference) and must not sit out the timeout."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    # -- capture thread ------------------------------------------------------------------
    def _run(self) -> None:
        """Capture until stopped or a finite source ends. A crash of this thread's own code
        closes the source and starts capture again after a back-off, as Frigate restarts
        a camera's capture without touching the rest of the node."""
        crashes = 0
        try:
            while not self._stop.is_set():
                try:
                    self._connect_and_pump()
                    return
                except Exception as exc:
                    self.restarts += 1
                    delay = self._backoff(crashes)
                    crashes += 1
                    log.exception("event=capture_crashed source=%s reason=%s restart_in_s=%.2f",
                                  self._source.name, quote(_reason(exc)), delay)
                    self._report("offline")
                    self._close_source()
                    if self._stop.wait(delay):
                        return
        finally:
            self._close_source()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _connect_and_pump(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._source.open()
            except Exception as exc:
                reason = _reason(exc)
            else:
                if failures:
                    log.info("event=camera_online source=%s after_attempts=%d",
                             self._source.name, failures)
                self._report("online")
                lost, delivered = self._pump()
                if lost is None:
                    return  # stopped, or a finite source ended
                reason = lost
                if delivered:
                    failures = 0
            self._close_source()
            delay = self._backoff(failures)
            failures += 1
            self._report("offline")
            log.warning("event=camera_offline source=%s reason=%s attempt=%d retry_in_s=%.2f",
                        self._source.name, quote(reason), failures, delay)
            if self._stop.wait(delay):
                return

    def _pump(self) -> tuple[str | None, bool]:
        """Read until stopped, ended or lost: (None, _) or (reason the source was lost,
        whether it delivered any frame first)."""
        source = self._source
        interval = self._interval()
        due = time.monotonic()
        delivered = False
        while not self._stop.is_set():
            if interval is not None:
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
                # Behind by more than a frame (slow decode, a stall): start a new schedule
                # instead of reading a burst to catch up.
                due = max(due, time.monotonic() - interval) + interval
            try:
                image = source.read()
            except Exception as exc:
                return _reason(exc), delivered
            if image is None:
                if source.live:
                    return "stream ended", delivered
                log.info("event=source_ended source=%s frames=%d", source.name, self.frames)
                self._report("ended")
                return None, delivered
            frame = Frame(image=image, index=self.frames, captured_at=time.time(),
                          monotonic=time.monotonic())
            delivered = True
            self._publish(frame)
        return None, delivered

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if self._handoff:
                self._cond.wait_for(lambda: self._slot is None or self._stop.is_set())
            if self._slot is not None:
                self.dropped += 1
            self._slot = frame
            self.frames += 1
            self._cond.notify_all()

    def _interval(self) -> float | None:
        """Seconds between reads of a paced file or folder; None when the source sets the
        pace (live) or nothing may be dropped (handoff)."""
        if self._source.live or not self._cfg.realtime:
            return None
        fps = self._source.fps or self._cfg.fps or FALLBACK_FPS
        return 1.0 / (fps * self._cfg.speed)

    def _backoff(self, failures: int) -> float:
        low = self._cfg.reconnect_min_s
        high = max(low, self._cfg.reconnect_max_s)
        delay = min(high, low * 2.0 ** min(failures, 30))
        return min(high, delay * self._random.uniform(1.0 - JITTER, 1.0 + JITTER))

    def _report(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        try:
            self._on_status(state)
        except Exception as exc:
            log.exception("event=camera_status_callback_failed state=%s reason=%s", state, exc)

    def _close_source(self) -> None:
        try:
            self._source.close()
        except Exception as exc:
            log.warning("event=camera_close_failed source=%s reason=%s", self._source.name,
                        quote(_reason(exc)))


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__
