"""Test helpers for running the real `edge-agent run` as a process against a real broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2

from sim.demo import CAMERA, camera_config

EVENT_LOG = re.compile(r"event=(\w+) phase=(\w+) event_id=(\S+) seq=(\d+)")


def short_clip(vtest: Path, out: Path, start: int = 250, frames: int = 60) -> Path:
    """A slice of vtest.avi (people in the walkway) as its own file, written in tmp_path."""
    cap = cv2.VideoCapture(str(vtest))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    writer = None
    for _ in range(frames):
        ok, img = cap.read()
        if not ok:
            break
        if writer is None:
            h, w = img.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
        writer.write(img)
    cap.release()
    assert writer is not None
    writer.release()
    return out


def frame_folder(vtest: Path, out: Path, frames: int) -> Path:
    """The first frames of vtest.avi as JPEGs: a camera that can be unplugged (renamed)."""
    out.mkdir()
    cap = cv2.VideoCapture(str(vtest))
    for i in range(frames):
        ok, img = cap.read()
        assert ok
        cv2.imwrite(str(out / f"{i:04d}.jpg"), img)
    cap.release()
    return out


def node_config(tmp: Path, *, clip: Path, model: Path, port: int, name: str = "node.toml",
                **sections: dict[str, Any]) -> Path:
    defaults: dict[str, dict[str, Any]] = {
        "detector": {"threads": 1},
        "mqtt": {"telemetry_interval_s": 2, "reconnect_max_s": 2, "keepalive_s": 5},
    }
    for key, values in sections.items():
        if isinstance(values, list):  # zones, lines, rules: replaced whole
            defaults[key] = values  # type: ignore[assignment]
        else:
            defaults.setdefault(key, {}).update(values)
    return camera_config(CAMERA, tmp / name, clip=clip, model=model, port=port,
                         state_dir=tmp / "state", **defaults)


class AgentProcess:
    """`python -m edge_agent.cli run` with its log captured to a file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config),
             "--log-level", "INFO"], stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 60, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if len(re.findall(pattern, text)) >= count:
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode} before {pattern!r}:"
                                     f"\n{text[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in the agent log within {timeout}s:\n"
                             f"{self.log()[-3000:]}")

    def logged_events(self) -> list[tuple[str, str, str, int]]:
        """(type, phase, event_id, seq) for every event the agent says it emitted."""
        return [(t, p, i, int(s)) for t, p, i, s in EVENT_LOG.findall(self.log())]

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()
