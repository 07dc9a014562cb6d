"""Inference backends: the engines that run an ONNX graph, one module each, chosen by config.

This file only maps a config key to a backend; it must never pre- or post-process."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from edge_agent.detect.backends.base import Backend
from edge_agent.detect.backends.ort import OrtBackend

__all__ = ["BACKENDS", "Backend", "open_backend"]

BACKENDS = ("onnxruntime", "opencv")


def open_backend(name: str, path: Path, session: ort.InferenceSession, threads: int,
                 output_names: list[str], input_hw: tuple[int, int]) -> Backend:
    """`session` is the onnxruntime session the model was inspected with: the onnxruntime
    backend runs on it, the others let it go. `input_hw` is the input the detector feeds
    (a dynamic-input model's nominal size): OpenCV's trial run uses it, since a symbolic
    height or width read as 1 breaks the graph's concatenations."""
    if name == "onnxruntime":
        return OrtBackend(session)
    if name == "opencv":
        from edge_agent.detect.backends.cvdnn import OpenCVBackend

        return OpenCVBackend(path, threads, output_names, (1, 3, *input_hw))
    raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
