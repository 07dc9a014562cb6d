"""Times two detectors on the same frames and measures how far their boxes agree.

For choosing a model variant or a backend on the node's own hardware; never changes either."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.detect.detector import Detector
from edge_agent.detect.types import Detection
from edge_agent.modeltools.agreement import NONE, Agreement, agree


@dataclass(frozen=True, slots=True)
class Comparison:
    reference_ms: float
    other_ms: float
    """Median milliseconds per inference (letterbox and decoding excluded: the same code
    runs for both)."""
    agreement: Agreement
    frames: int

    @property
    def speedup(self) -> float:
        """How many times faster the other detector infers than the reference."""
        return self.reference_ms / self.other_ms if self.other_ms > 0 else float("inf")


def compare(reference: Detector, other: Detector, frames: Sequence[npt.NDArray[np.uint8]],
            rounds: int = 3) -> Comparison:
    """Each round times the reference on every frame, then the other: blocks rather than
    frame by frame, because onnxruntime's idle threads spin for a while after a run and,
    alternating per frame, each detector's spinning threads slowed the other's run by up to
    3x on 2 cores. Several rounds, medians reported, so load from other processes hits both
    alike."""
    t_ref: list[float] = []
    t_other: list[float] = []
    found: dict[int, list[list[Detection]]] = {0: [], 1: []}
    for r in range(rounds):
        for k, (det, times) in enumerate(((reference, t_ref), (other, t_other))):
            det.infer(det.prepare(frames[0]).crops[0].tensor)  # warm: threads awake
            for frame in frames:
                prepared = det.prepare(frame)
                t0 = time.perf_counter()
                outputs = [det.infer(c.tensor) for c in prepared.crops]
                times.append(time.perf_counter() - t0)
                if r == 0:
                    found[k].append(det.finish(prepared, outputs))
    agreement = NONE
    for a, b in zip(found[0], found[1], strict=True):
        agreement = agreement + agree(a, b)
    return Comparison(statistics.median(t_ref) * 1000, statistics.median(t_other) * 1000,
                      agreement, len(frames))
