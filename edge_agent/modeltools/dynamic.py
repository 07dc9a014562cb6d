"""Dynamic-size variants of a detector model: the same graph with a symbolic input height and
width, so a region crop can run at a smaller input than the whole frame (and cost less).

Writes one new file; never changes the source model, and never reports a file it did not run
at two sizes and check against the source at the nominal size."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.detect.adapters.base import grid_cells
from edge_agent.detect.backends.base import INPUT_TYPES
from edge_agent.detect.errors import ModelError
from edge_agent.detect.letterbox import STRIDE
from edge_agent.detect.types import NOMINAL_KEY

HEIGHT, WIDTH = "height", "width"
RTOL = ATOL = 1e-4
"""At the nominal size the copy runs the same kernels on the same weights; onnxruntime may pick
other kernels for symbolic shapes, so allow float rounding, nothing more."""


@dataclass(frozen=True, slots=True)
class DynamicReport:
    path: Path
    nominal: tuple[int, int]
    """(width, height) the source model was made for."""
    timings_ms: dict[tuple[int, int], float]
    """Median single-thread inference time of the copy per (width, height) tried."""
    source_ms: float
    """The same for the source model at its nominal size."""


def dynamic_path(model: Path) -> Path:
    return model.with_name(f"{model.stem}_dynamic.onnx")


def probe_size(nominal: tuple[int, int]) -> tuple[int, int]:
    """A smaller, non-square size (so height and width are both seen to change on their own)."""
    w, h = nominal
    return (max(STRIDE, round(w * 0.75 / STRIDE) * STRIDE),
            max(STRIDE, round(h * 0.5 / STRIDE) * STRIDE))


def make_dynamic(src: Path, dst: Path, *, timing_runs: int = 10) -> DynamicReport:
    """Write `dst`: `src` with a symbolic input height and width and its nominal size in the
    metadata; ModelError (naming `src` and the reason) when the graph has sizes baked in."""
    onnx = _onnx()
    model = _load(onnx, src)
    graph = model.graph
    image = _image_input(src, graph)
    dims = image.type.tensor_type.shape.dim
    if not (dims[2].HasField("dim_value") and dims[3].HasField("dim_value")):
        raise ModelError(src, f"input {image.name} already has a dynamic height/width; "
                              f"give it '{NOMINAL_KEY}' metadata (WxH) instead")
    nominal = (int(dims[3].dim_value), int(dims[2].dim_value))
    if nominal[0] % STRIDE or nominal[1] % STRIDE:
        raise ModelError(src, f"input {image.name} is {nominal[0]}x{nominal[1]}, not a "
                              f"multiple of {STRIDE}: not a YOLO-style detector input")
    _refuse_fixed_sizes(onnx, src, graph, image.name)
    dims[2].dim_param, dims[3].dim_param = HEIGHT, WIDTH
    declared = [[d.dim_value if d.HasField("dim_value") else None
                 for d in o.type.tensor_type.shape.dim] for o in graph.output]
    for out in graph.output:
        for i, d in enumerate(out.type.tensor_type.shape.dim):
            if i > 0 and d.HasField("dim_value"):
                d.dim_param = f"{out.name}_{i}"
    del graph.value_info[:]  # intermediate shapes of the nominal size: wrong at any other
    meta = {p.key: p for p in model.metadata_props}
    if NOMINAL_KEY in meta:
        meta[NOMINAL_KEY].value = f"{nominal[0]}x{nominal[1]}"
    else:
        model.metadata_props.add(key=NOMINAL_KEY, value=f"{nominal[0]}x{nominal[1]}")

    reference = _session(src, model=None)
    dtype = INPUT_TYPES.get(reference.get_inputs()[0].type)
    if dtype is None:
        raise ModelError(src, f"input {image.name} is {reference.get_inputs()[0].type}; "
                              "expected float or float16")
    sizes = (nominal, probe_size(nominal))
    tensors = {s: _pseudo_image(s, dtype) for s in sizes}
    expected = reference.run(None, {image.name: tensors[nominal]})
    copy = _session(src, model=model.SerializeToString())
    outputs = {s: _run(copy, src, image.name, t) for s, t in tensors.items()}
    _check_nominal(src, graph, expected, outputs[nominal])
    _check_probe(src, graph, nominal, sizes[1], outputs[nominal], outputs[sizes[1]])
    # Dims that did not change with the size go back to their declared value.
    for out, want, got, other in zip(graph.output, declared, outputs[nominal],
                                     outputs[sizes[1]], strict=True):
        for i, d in enumerate(out.type.tensor_type.shape.dim):
            if i > 0 and want[i] is not None and got.shape[i] == other.shape[i]:
                d.dim_value = want[i]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".dynamic-") as tmp:
        staged = Path(tmp) / dst.name
        onnx.save(model, str(staged))
        final = _session(staged, model=None, threads=1)
        timings = {s: _median_ms(final, image.name, t, timing_runs) for s, t in tensors.items()}
        source_ms = _median_ms(reference, image.name, tensors[nominal], timing_runs)
        os.replace(staged, dst)
    return DynamicReport(dst, nominal, timings, source_ms)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ModelError("onnx", f"making a dynamic copy needs the onnx package "
                                 f"({exc.name} missing): pip install onnx") from None
    return onnx


def _load(onnx: Any, src: Path) -> Any:
    if not src.is_file():
        raise ModelError(src, "not found" if not src.exists() else "not a file")
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(src, f"not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not len(model.graph.node):
        raise ModelError(src, "not an ONNX model (no graph nodes)")
    return model


def _image_input(src: Path, graph: Any) -> Any:
    fed = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in fed]
    if len(inputs) != 1:
        raise ModelError(src, f"has {len(inputs)} inputs; only models with one image input "
                              "[1,3,H,W] are supported")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelError(src, f"input {inputs[0].name} has {len(dims)} dims; expected an image "
                              "tensor [1,3,H,W]")
    return inputs[0]


def _refuse_fixed_sizes(onnx: Any, src: Path, graph: Any, image: str) -> None:
    """Reshape targets and Resize output sizes written into the graph as constants hold the
    nominal size: the graph then cannot run at another. Targets computed from Shape, or with
    -1 (inferred) or 0 (copied) in them, follow the input."""
    from onnx import numpy_helper

    constants: dict[str, npt.NDArray[Any]] = {
        i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    live = {image}  # tensors computed from the image
    for node in graph.node:
        if any(i in live for i in node.input):
            live.update(node.output)
        if node.op_type == "Reshape" and node.input[0] in live and node.input[1] in constants:
            target = constants[node.input[1]].ravel().tolist()
            if -1 not in target and 0 not in target:
                raise ModelError(src, f"Reshape {node.name or node.output[0]} has the fixed "
                                      f"target shape {target} (no -1): the graph was exported "
                                      "for one input size; re-export it with dynamic axes")
        if (node.op_type == "Resize" and len(node.input) > 3 and node.input[3]
                and node.input[3] in constants and constants[node.input[3]].size):
            sizes = constants[node.input[3]].ravel().tolist()
            raise ModelError(src, f"Resize {node.name or node.output[0]} has the fixed output "
                                  f"size {sizes}: the graph was exported for one input size; "
                                  "re-export it with dynamic axes")


def _session(path: Path, model: bytes | None, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # declared-vs-actual shape warnings are what we check
    what = "onnxruntime cannot load it" + (" with a dynamic input" if model else "")
    try:
        return ort.InferenceSession(model if model is not None else str(path), opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind errors
        raise ModelError(path, f"{what}: {exc}") from None


def _pseudo_image(size: tuple[int, int], dtype: type[np.floating]) -> npt.NDArray[np.floating]:
    """Noise in 0..255 with the same seed at every size: real activations all over the graph,
    not the zeros that make every copy look right."""
    w, h = size
    return (np.random.default_rng(7).random((1, 3, h, w)) * 255).astype(dtype)


def _run(session: ort.InferenceSession, src: Path, name: str,
         tensor: npt.NDArray[np.floating]) -> list[npt.NDArray[Any]]:
    try:
        return list(session.run(None, {name: tensor}))
    except Exception as exc:  # onnxruntime's pybind errors
        h, w = tensor.shape[2:]
        raise ModelError(src, f"does not run at {w}x{h} with a dynamic input (sizes baked "
                              f"into the graph?): {exc}") from None


def _check_nominal(src: Path, graph: Any, expected: list[npt.NDArray[Any]],
                   got: list[npt.NDArray[Any]]) -> None:
    for out, a, b in zip(graph.output, expected, got, strict=True):
        if a.shape != b.shape or not np.allclose(a, b, rtol=RTOL, atol=ATOL):
            raise ModelError(src, f"the dynamic copy's output {out.name} differs from the "
                                  f"model's at the nominal size: not written")


def _check_probe(src: Path, graph: Any, nominal: tuple[int, int], probe: tuple[int, int],
                 at_nominal: list[npt.NDArray[Any]], at_probe: list[npt.NDArray[Any]]) -> None:
    """An output that holds one row per grid cell at the nominal size must hold one per cell
    of the smaller input too: a constant that kept the nominal count shows here."""
    cells, probe_cells = grid_cells(*nominal), grid_cells(*probe)
    per_cell = {cells: 1, 3 * cells: 3}  # YOLOv5: 3 anchors a cell
    for out, a, b in zip(graph.output, at_nominal, at_probe, strict=True):
        for i, n in enumerate(a.shape):
            want = per_cell[n] * probe_cells if n in per_cell else None
            if want is not None and (len(b.shape) != len(a.shape) or b.shape[i] != want):
                raise ModelError(src, f"output {out.name} is {list(b.shape)} at {probe[0]}x"
                                      f"{probe[1]}, expected {want} rows (one per grid cell) "
                                      f"on axis {i}: sizes are baked into the graph")


def _median_ms(session: ort.InferenceSession, name: str, tensor: npt.NDArray[np.floating],
               runs: int) -> float:
    session.run(None, {name: tensor})  # the first run at a size allocates
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        session.run(None, {name: tensor})
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)
