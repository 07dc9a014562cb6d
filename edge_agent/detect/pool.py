"""Inference on worker threads, so one frame's inference overlaps the next frame's
pre-processing, the previous frame's tracking and rules, and other frames' inference.

Hands results back strictly in submission order; it never pre- or post-processes and never
holds more frames than its depth (a full pool makes the caller wait, not queue)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from edge_agent.detect.backends import Backend
from edge_agent.detect.backends.base import Outputs
from edge_agent.detect.detector import Detector, Prepared

T = TypeVar("T")


@dataclass(slots=True)
class Done(Generic[T]):
    """A finished job: the caller's item, what was prepared for it (None: nothing to
    detect), the outputs per crop and the seconds inference took."""

    item: T
    prepared: Prepared | None
    outputs: list[Outputs] = field(default_factory=list)
    infer_s: float = 0.0


class InferencePool(Generic[T]):
    """`workers` threads, each with its own backend handle; up to `depth` jobs at once.

    onnxruntime and OpenCV release the GIL while they compute, so the pipeline thread keeps
    working while workers infer. With depth = workers + 1 a worker never waits for the
    pipeline thread to prepare its next frame."""

    def __init__(self, detector: Detector, workers: int, depth: int,
                 on_done: Callable[[], None] | None = None) -> None:
        if workers < 1 or depth < 1:
            raise ValueError("workers and depth must be at least 1")
        self.detector = detector
        self.depth = depth
        self._on_done = on_done
        self._local = threading.local()
        self._jobs: deque[tuple[Done[T], Future[Done[T]] | None]] = deque()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="inference")

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def full(self) -> bool:
        return len(self._jobs) >= self.depth

    def submit(self, item: T, prepared: Prepared | None) -> None:
        """Queue `item`; without `prepared` it completes at once but still comes back in
        order, after every item submitted before it."""
        done: Done[T] = Done(item, prepared)
        if prepared is None or not prepared.crops:
            self._jobs.append((done, None))
            if self._on_done is not None:
                self._on_done()
            return
        self._jobs.append((done, self._executor.submit(self._infer, done)))

    def ready(self, wait: bool = False) -> list[Done[T]]:
        """The finished jobs at the front, in order; with `wait`, first block until the
        oldest job is finished."""
        out: list[Done[T]] = []
        while self._jobs:
            done, future = self._jobs[0]
            if future is not None:
                if not future.done() and (out or not wait):
                    break
                future.result()  # waits; re-raises a worker's exception on this thread
            self._jobs.popleft()
            out.append(done)
        return out

    def drain(self) -> list[Done[T]]:
        """Everything still in flight, waiting for it."""
        out: list[Done[T]] = []
        while self._jobs:
            out += self.ready(wait=True)
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _infer(self, done: Done[T]) -> Done[T]:
        backend: Backend | None = getattr(self._local, "backend", None)
        if backend is None:
            backend = self._local.backend = self.detector.backend.for_worker()
        assert done.prepared is not None
        t0 = time.perf_counter()
        try:
            done.outputs = [self.detector.infer(c.tensor, backend) for c in done.prepared.crops]
            done.infer_s = time.perf_counter() - t0
        finally:
            if self._on_done is not None:
                self._on_done()
        return done
