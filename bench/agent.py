"""Camera-node figures: the pipeline's frame rate against bare `session.run`, and memory.

Measures only; never asserts (targets are printed next to each figure)."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

from bench.report import Figure
from edge_agent.config import DetectorConfig, load_config
from edge_agent.detect.detector import Detector
from sim.broker import MosquittoBroker
from sim.demo import CAMERA, camera_config

GROUP = "agent"


def bare_limit(model: Path, clip: Path, threads: int, frames: int) -> tuple[float, float]:
    """Frames per second of `session.run` alone on the clip's frames, pre-processing excluded.

    This is the hard limit of the node: nothing the pipeline does can make the model faster."""
    det = Detector.from_config(DetectorConfig(model=model, threads=threads))
    cap = cv2.VideoCapture(str(clip))
    name = det.session.get_inputs()[0].name
    spent = 0.0
    n = 0
    while n < frames:
        ok, image = cap.read()
        if not ok:
            break
        tensor, _ = det.preprocess(image)
        t0 = time.perf_counter()
        det.session.run(None, {name: tensor})
        spent += time.perf_counter() - t0
        n += 1
    cap.release()
    return n / spent, spent / n * 1000


def pipeline_fps(model: Path, clip: Path, threads: int, broker: MosquittoBroker,
                 tmp: Path, motion: bool) -> tuple[float, int, int]:
    """Frames per second through the whole agent (capture thread, detector, tracker, rules,
    snapshots, spool, MQTT) with every frame of the clip processed (no dropping)."""
    from edge_agent.pipeline import Agent

    path = camera_config(CAMERA, tmp / f"node-{motion}.toml", clip=clip, model=model,
                         port=broker.port, state_dir=tmp / f"state-{motion}", realtime=False,
                         detector={"threads": threads}, motion={"enabled": motion})
    agent = Agent(load_config(path))
    marks: list[float] = []
    process = agent.process

    def timed(frame: Any) -> Any:
        out = process(frame)
        marks.append(time.perf_counter())
        return out

    agent.process = timed  # type: ignore[method-assign]
    agent.run()
    span = marks[-1] - marks[0]
    return (len(marks) - 1) / span, len(marks), agent.stats.detector_runs


def agent_rss(model: Path, clip: Path, broker: MosquittoBroker, tmp: Path) -> tuple[float, float]:
    """Peak resident memory of `edge-agent run` on the clip, and its start-up time to the
    first processed frame as logged."""
    path = camera_config(CAMERA, tmp / "node-rss.toml", clip=clip, model=model,
                         port=broker.port, state_dir=tmp / "state-rss", realtime=False)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "run", "--config",
                             str(path), "--log-level", "INFO"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    startup = float("nan")
    assert proc.stdout is not None
    for line in proc.stdout:
        if "event=first_frame" in line and startup != startup:
            startup = time.monotonic() - t0
    proc.wait()
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak_kb / 1024, startup


def run(shared: Path, var: Path) -> list[Figure]:
    from sim import media

    clip = media.sample_clip(shared, var)
    model = media.model("yolox-nano", shared, var)
    threads = 2
    figs: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as d, MosquittoBroker() as broker:
        tmp = Path(d)
        bare, ms = bare_limit(model, clip, threads, frames=300)
        figs.append(Figure(GROUP, f"bare session.run, YOLOX-Nano, {threads} threads", bare,
                           "fps", note=f"{ms:.1f} ms per inference"))
        fps, frames, runs = pipeline_fps(model, clip, threads, broker, tmp, motion=False)
        ratio = fps / bare
        figs.append(Figure(GROUP, "pipeline, motion gating off", fps, "fps",
                           note=f"{frames} frames, {runs} detector runs"))
        figs.append(Figure(GROUP, "pipeline / bare (gating off)", round(ratio, 3), "ratio",
                           ">= 0.9", ratio >= 0.9))
        fps_on, frames_on, runs_on = pipeline_fps(model, clip, threads, broker, tmp,
                                                  motion=True)
        figs.append(Figure(GROUP, "pipeline, motion gating on", fps_on, "fps",
                           note=f"{frames_on} frames, {runs_on} detector runs"))
        rss, startup = agent_rss(model, clip, broker, tmp)
        figs.append(Figure(GROUP, "agent peak RSS with YOLOX-Nano", round(rss, 1), "MB",
                           "< 300", rss < 300))
        figs.append(Figure(GROUP, "start-up to first processed frame", round(startup, 2), "s"))
    return figs
