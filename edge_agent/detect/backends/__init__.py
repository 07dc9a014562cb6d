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
                 output_names: list[str]) -> Backend:
    """`session` is the onnxruntime session the model was inspected with: the onnxruntime
    backend runs on it, the others let it go."""
    if name == "onnxruntime":
        return OrtBackend(session)
    if name == "opencv":
        from edge_agent.detect.backends.cvdnn import OpenCVBackend

        shape = session.get_inputs()[0].shape
        return OpenCVBackend(path, threads, output_names,
                             tuple(d if isinstance(d, int) else 1 for d in shape))
    raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
