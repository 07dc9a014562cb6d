"""The OpenCV DNN backend: the same ONNX file run by OpenCV's own engine instead.

One cv2.dnn.Net per thread (a Net is not thread-safe); it must never be shared between workers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_agent.detect.backends.base import Backend, Outputs, Tensor
from edge_agent.detect.errors import ModelError


class OpenCVBackend:
    """OpenCV's thread count is process-wide (cv2.setNumThreads): the detector's `threads`
    then also applies to the resizes of motion gating and pre-processing."""

    name = "opencv"

    def __init__(self, path: Path, threads: int, output_names: list[str],
                 input_shape: tuple[int, ...]) -> None:
        self.path = path
        self.threads = threads
        self.output_names = output_names
        self.input_shape = input_shape
        cv2.setNumThreads(threads)
        try:
            self.net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as exc:
            raise ModelError(path, f"OpenCV DNN cannot load it: {_first_line(exc)}") from None
        try:  # unsupported layers often show only at the first forward: fail at load
            self.run(np.zeros(input_shape, np.float32))
        except cv2.error as exc:
            raise ModelError(path, f"OpenCV DNN cannot run it: {_first_line(exc)}") from None

    def run(self, tensor: Tensor) -> Outputs:
        self.net.setInput(tensor if tensor.dtype == np.float32 else tensor.astype(np.float32))
        out = self.net.forward(self.output_names)
        return list(out)

    def for_worker(self) -> Backend:
        return OpenCVBackend(self.path, self.threads, self.output_names, self.input_shape)


def _first_line(exc: cv2.error) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # OpenCV puts the useful part last: "... error: (-2:Unspecified error) <reason>"
    return lines[-1] if lines else type(exc).__name__
