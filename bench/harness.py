"""Feeds frames to an in-process agent on a simulated camera clock, for figures that must not
depend on how fast this machine happens to be (gating cost, event agreement).

Measures and records only; never asserts and never talks to a broker (events stay spooled)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.agent import Agent
from edge_agent.capture.frame import Frame
from edge_agent.config import load_config
from sim.demo import CAMERA, camera_config

Image = npt.NDArray[np.uint8]
CLIP_FPS = 10.0
"""vtest.avi's own rate: the rules' durations and the gate's refresh see camera time."""
MATCH_S = 2.0
"""Two runs' events are the same event when type and place agree and they start within
this long of each other: one motion refresh, the longest a gated run can be late."""


@dataclass(frozen=True, slots=True)
class Seen:
    """An event as agreement judges it: what, where, when (camera seconds)."""

    type: str
    place: str
    at: float


@dataclass
class RunResult:
    frames: int = 0
    detector_runs: int = 0
    inferences: int = 0
    region_runs: int = 0
    cpu_s: float = 0.0
    """Process CPU spent inside `process` (decoding the clip excluded)."""
    events: list[Seen] = field(default_factory=list)
    inputs: Counter[str] = field(default_factory=Counter)
    """Inferences by input size ("416x320"): what a dynamic-input model actually ran."""

    def per_100(self, value: float) -> float:
        return value * 100.0 / max(self.frames, 1)


def clip_frames(clip: Path, limit: int | None = None) -> Iterator[Image]:
    cap = cv2.VideoCapture(str(clip))
    n = 0
    try:
        while limit is None or n < limit:
            ok, image = cap.read()
            if not ok:
                return
            n += 1
            yield np.asarray(image, np.uint8)
    finally:
        cap.release()


def background(clip: Path, samples: int = 50) -> Image:
    """The clip without the people: the median of frames spread over it (everyone walks on,
    so each pixel is background in most of them)."""
    frames = list(clip_frames(clip))
    pick = frames[:: max(1, len(frames) // samples)]
    return np.asarray(np.median(np.stack(pick), axis=0), np.uint8)


def window_scene(clip: Path, window: tuple[int, int, int, int]) -> Iterator[Image]:
    """A camera over a still scene in which only `window` (x1, y1, x2, y2) lives: the
    clip's empty background with the clip's own pixels inside the window. People who walk
    out of the window vanish; both runs compared on it see the same frames."""
    still = background(clip)
    x1, y1, x2, y2 = window
    for image in clip_frames(clip):
        out = still.copy()
        out[y1:y2, x1:x2] = image[y1:y2, x1:x2]
        yield out


def feed(config: Path, frames: Iterator[Image]) -> RunResult:
    """Every frame through `Agent.process` with capture times CLIP_FPS apart."""
    agent = Agent(load_config(config))
    out = RunResult()
    infer = agent.detector.infer

    def counted(tensor: Any, backend: Any = None) -> Any:  # bench instrumentation only
        out.inputs[f"{tensor.shape[3]}x{tensor.shape[2]}"] += 1
        return infer(tensor, backend)

    agent.detector.infer = counted  # type: ignore[method-assign]
    t0 = time.time()
    try:
        for i, image in enumerate(frames):
            at = i / CLIP_FPS
            frame = Frame(image=image, index=i, captured_at=t0 + at, monotonic=at)
            c0 = time.process_time()
            events = agent.process(frame)
            out.cpu_s += time.process_time() - c0
            for ev in events:
                if ev.phase in ("start", "instant"):
                    place = str(ev.details.get("zone") or ev.details.get("line") or "")
                    out.events.append(Seen(ev.type, place, at))
            out.frames += 1
    finally:
        agent.spool.close()
    out.detector_runs = agent.stats.detector_runs
    out.inferences = agent.stats.inferences
    out.region_runs = agent.stats.region_runs
    return out


def node_config(tmp: Path, name: str, *, clip: Path, model: Path, **sections: dict[str, Any]
                ) -> Path:
    return camera_config(CAMERA, tmp / f"{name}.toml", clip=clip, model=model, port=1,
                         state_dir=tmp / f"state-{name}", **sections)


def agreement(reference: list[Seen], other: list[Seen]) -> tuple[float, int, int, int]:
    """(share of events both runs have, matched, only in reference, only in other): the
    share is 2 * matched / (both counts), so a missed and an extra event count alike."""
    left = sorted(other, key=lambda e: e.at)
    used: set[int] = set()
    matched = 0
    for ev in sorted(reference, key=lambda e: e.at):
        best: int | None = None
        for j, o in enumerate(left):
            if j in used or o.type != ev.type or o.place != ev.place:
                continue
            if abs(o.at - ev.at) <= MATCH_S and (best is None or
                                                 abs(o.at - ev.at) < abs(left[best].at - ev.at)):
                best = j
        if best is not None:
            used.add(best)
            matched += 1
    total = len(reference) + len(other)
    share = 2 * matched / total if total else 1.0
    return share, matched, len(reference) - matched, len(other) - matched
