"""The onnxruntime backend, and the one place that opens onnxruntime sessions.

A model onnxruntime cannot load fails here with a one-line ModelError; nothing else loads."""

from __future__ import annotations

import re
from pathlib import Path

import onnxruntime as ort

from edge_agent.detect.backends.base import Backend, Outputs, Tensor
from edge_agent.detect.errors import ModelError


def open_session(path: Path, threads: int, spin: bool = True) -> ort.InferenceSession:
    """A session that runs one inference on `threads` threads; concurrent `run` calls from
    several Python threads are safe (onnxruntime serialises nothing but its arena).

    `spin`: the extra threads busy-wait for the next operator instead of sleeping: faster
    on cores nothing else wants, slower when another process needs them (DetectorConfig)."""
    if not path.exists():
        raise ModelError(path, "model file not found")
    if path.is_dir():
        raise ModelError(path, "is a directory, not a model file")
    try:
        with path.open("rb") as f:
            if not f.read(1):
                raise ModelError(path, "empty file, not an ONNX model")
    except OSError as exc:
        raise ModelError(path, f"cannot read model: {exc.strerror}") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: initializer warnings are noise on a node's log
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind classes, none shared
        text = str(exc)
        if type(exc).__name__ == "InvalidProtobuf" or "Protobuf parsing failed" in text:
            raise ModelError(path, "not an ONNX model (protobuf parse failed)") from None
        text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
        text = re.sub(r"^Load model from .*? failed:", "", text)
        raise ModelError(path, f"onnxruntime cannot load it: {text}") from None


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self._input = session.get_inputs()[0].name
        self._outputs = [o.name for o in session.get_outputs()]

    def run(self, tensor: Tensor) -> Outputs:
        out: Outputs = self.session.run(self._outputs, {self._input: tensor})
        return out

    def for_worker(self) -> Backend:
        return self  # one session, one copy of the weights, however many workers
