"""int8 variants of a detector model: static QDQ quantization calibrated on frames like the
node's own, checked for speed and agreement against the float model before anyone uses it.

Writes one new file; never changes the float model, and never reports a file it did not check.

What the int8 file buys depends on onnxruntime's CPU kernels more than on the CPU. YOLOX-Nano,
vtest.avi, onnxruntime 1.32, 2-core AVX-512 VNNI EPYC, float and int8 alternating: 1 thread
14.2 -> 10.2 ms (1.38x), 2 threads 8.6 -> 8.1 ms (1.06x; best runs, the machine was shared).
int8 pointwise convolutions run 2-3x faster, depthwise ones 0.5-0.8x; SiLU becomes
QLinearSigmoid (a scalar lookup table) + QLinearMul, 5.3 ms against 2.9 ms for float's fused
QuickGelu, and onnxruntime runs both on one thread below ~100K elements, so a second thread
saves int8 ~2 ms where it saves float ~6. Tried, 1-thread speed-up and F1: the plain QDQ
default 1.28x 0.936, QOperator format 1.28x, reduce_range 1.27x, float SiLU between
DequantizeLinear and QuantizeLinear 1.21x 0.938, depthwise convolutions and their SiLU left
float 1.15x (layout changes around each), Conv only 0.97x, U8U8 0.81x, S8S8 0.44x, dynamic
0.68x; per-tensor weights and symmetric activations lost every box (F1 0)."""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.config import DetectorConfig
from edge_agent.detect.detector import Detector
from edge_agent.modeltools.compare import Comparison, compare

Image = npt.NDArray[np.uint8]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
METHODS = ("minmax", "entropy", "percentile")
MOVING_AVERAGE = True
"""MinMax calibration averages each tensor's per-frame range instead of taking the extreme:
on YOLOX-Nano and vtest.avi the extreme gave F1 0.93 with 16 calibration frames but 0.65
with 32 and 0.58 with 64 (one unusual frame widens a range and costs every other frame its
precision); the average gave 0.93-0.94 for all three."""
MIN_OPSET = 13
"""Per-channel weight scales need DequantizeLinear's `axis`, which came with opset 13."""
SHARED_CONCAT_RANGE = True
"""All tensors a Concat joins get one range (the union of theirs), so QLinearConcat copies
bytes instead of requantizing every input: YOLOX-Nano's 17 Concats 0.66 -> 0.35 ms per
inference (1 thread), F1 0.936 -> 0.934."""
RANGE_KEEPING = frozenset({"Resize", "MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                           "Flatten", "Slice", "Gather", "Split"})
"""Ops whose quantized output onnxruntime's QDQ quantizer gives its input's scale."""
HOISTED_OPS = frozenset({"SpaceToDepth", "Gather", "Transpose", "Reshape"})
"""Pure data movement between a model input and its QuantizeLinear: quantizing first moves
bytes instead of floats, and exactly so (a per-tensor scale commutes with reordering).
YOLOX-Nano's Focus input (SpaceToDepth + Gather, 1x3x416x416) 0.60 -> 0.22 ms."""


class QuantizeError(Exception):
    """Quantization cannot run: a missing tool, no calibration frames, an unusable model."""


@dataclass(frozen=True, slots=True)
class QuantizeReport:
    path: Path
    seconds: float
    calibration_frames: int
    comparison: Comparison
    """Float (reference) against int8 (other), on frames not used for calibration."""


def int8_path(model: Path, folder: Path | None = None) -> Path:
    return (folder or model.parent) / f"{model.stem}_int8.onnx"


def read_frames(source: Path, count: int) -> list[Image]:
    """`count` frames spread evenly over a video file or a folder of images."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        pick = files[:: max(1, len(files) // max(count, 1))][:count]
        images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in pick]
        frames = [np.asarray(i, np.uint8) for i in images if i is not None]
    elif source.is_file():
        frames = list(_video_frames(source, count))
    else:
        raise QuantizeError(f"{source}: calibration source not found")
    if not frames:
        raise QuantizeError(f"{source}: no readable frames (a video file or a folder of "
                            f"images {', '.join(IMAGE_SUFFIXES)})")
    return frames


def _video_frames(path: Path, count: int) -> Iterator[Image]:
    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        step = max(1, total // max(count, 1)) if total > 0 else 1
        index = taken = 0
        while taken < count:
            ok, image = cap.read()
            if not ok:
                return
            if index % step == 0:
                taken += 1
                yield np.asarray(image, np.uint8)
            index += 1
    finally:
        cap.release()


def quantize(src: Path, dst: Path, frames: Sequence[Image], *, method: str = "minmax",
             threads: int = 2) -> QuantizeReport:
    """Calibrate on the even frames, compare on the odd ones (never on its own calibration
    frames), write `dst` only when it loads and runs."""
    if method not in METHODS:
        raise QuantizeError(f"unknown calibration method {method!r} "
                            f"(known: {', '.join(METHODS)})")
    if len(frames) < 2:
        raise QuantizeError("need at least 2 frames (half calibrate, half check)")
    calibration, check = frames[0::2], frames[1::2]
    reference = Detector.from_config(DetectorConfig(model=src, threads=threads))
    t0 = time.perf_counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quantize-") as tmp:
        staged = Path(tmp) / dst.name
        _quantize_static(src, staged, reference, calibration, method, Path(tmp))
        seconds = time.perf_counter() - t0
        int8 = Detector.from_config(DetectorConfig(model=staged, threads=threads))
        comparison = compare(reference, int8, check)
        os.replace(staged, dst)
    return QuantizeReport(dst, seconds, len(calibration), comparison)


def _quantize_static(src: Path, dst: Path, reference: Detector, calibration: Sequence[Image],
                     method: str, tmp: Path) -> None:
    try:
        import onnx
        from onnx import version_converter
        from onnxruntime import quantization as q
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise QuantizeError(f"quantization needs the onnx package ({exc.name} missing): "
                            "pip install onnx") from None
    model = onnx.load(str(src))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    if opset < MIN_OPSET:
        model = version_converter.convert_version(model, MIN_OPSET)
    converted, prepared = tmp / "opset.onnx", tmp / "prepared.onnx"
    onnx.save(model, str(converted))
    quant_pre_process(str(converted), str(prepared), skip_symbolic_shape=True)
    name = reference.session.get_inputs()[0].name
    tensors = [reference.preprocess(f)[0].copy() for f in calibration]

    class Reader(q.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(tensors)

        def get_next(self) -> dict[str, npt.NDArray[np.floating]] | None:
            t = next(self._it, None)
            return None if t is None else {name: t}

    calibrate = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                 "percentile": q.CalibrationMethod.Percentile}[method]
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process is followed above
    try:
        calibrator = q.create_calibrator(  # what quantize_static would calibrate
            str(prepared), sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
            augmented_model_path=str(tmp / "augmented.onnx"), calibrate_method=calibrate,
            extra_options={"moving_average": MOVING_AVERAGE})
        calibrator.collect_data(Reader())
        ranges = calibrator.compute_data()
        del calibrator
        options: dict[str, object] = {"CalibMovingAverage": MOVING_AVERAGE}
        if SHARED_CONCAT_RANGE:
            options["TensorQuantOverrides"] = _concat_ranges(onnx.load(str(prepared)).graph,
                                                             ranges)
        reader: Reader | None = Reader()
        cached: dict[str, str] = {}
        if "calibration_cache_path" in inspect.signature(q.quantize_static).parameters:
            q.save_tensors_data(ranges, tmp / "ranges.json")  # calibrate once, not twice
            reader, cached = None, {"calibration_cache_path": str(tmp / "ranges.json")}
        q.quantize_static(str(prepared), str(dst), reader, quant_format=q.QuantFormat.QDQ,
                          per_channel=True, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8, calibrate_method=calibrate,
                          extra_options=options, **cached)
    finally:
        logging.getLogger().setLevel(quiet)
    out = onnx.load(str(dst))
    _hoist_input_quantize(out.graph)
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    meta["quantized"] = (f"int8 static QDQ, per-channel weights, {method} calibration on "
                         f"{len(calibration)} frames, from {src.name}")
    del out.metadata_props[:]
    for key, value in meta.items():
        prop = out.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(out, str(dst))


def _concat_ranges(graph: Any, ranges: Any) -> dict[str, list[dict[str, np.float32]]]:
    """onnxruntime TensorQuantOverrides giving every calibrated tensor a Concat joins the
    union of their ranges: one scale and zero point, so QLinearConcat needs no requantizing.
    Followed through shared tensors, chained Concats, and RANGE_KEEPING ops, whose output
    the quantizer gives its input's scale whatever the override says."""
    parent: dict[str, str] = {}

    def root(t: str) -> str:
        while parent.setdefault(t, t) != t:
            t = parent[t]
        return t

    def join(tensors: Sequence[str]) -> None:
        known = [root(t) for t in tensors if t in ranges.data]
        for r in known[1:]:
            parent[root(r)] = root(known[0])

    joined: list[str] = []
    for node in graph.node:
        if node.op_type == "Concat" and node.output[0] in ranges.data:
            join([node.output[0], *node.input])
            joined.append(node.output[0])
        elif node.op_type in RANGE_KEEPING and node.input:
            join([node.input[0], *node.output])
    groups: dict[str, list[str]] = {}
    for t in parent:
        groups.setdefault(root(t), []).append(t)
    overrides: dict[str, list[dict[str, np.float32]]] = {}
    for members in {root(t): groups[root(t)] for t in joined}.values():
        low = min(float(np.min(ranges.data[t].range_value[0])) for t in members)
        high = max(float(np.max(ranges.data[t].range_value[1])) for t in members)
        for t in members:
            overrides[t] = [{"rmin": np.float32(low), "rmax": np.float32(high)}]
    return overrides


def _hoist_input_quantize(graph: Any) -> int:
    """Move each QuantizeLinear that follows a model input through HOISTED_OPS up to the
    input, so they reorder uint8 instead of float32; returns how many moved."""
    moved = 0
    while _hoist_one(graph):  # one at a time: rewriting the node list copies its nodes
        moved += 1
    return moved


def _hoist_one(graph: Any) -> bool:
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inputs = {i.name for i in graph.input}
    scalars = {t.name for t in graph.initializer if int(np.prod(t.dims)) == 1}
    for quant in graph.node:
        if quant.op_type != "QuantizeLinear" or quant.input[1] not in scalars:
            continue  # a per-axis scale does not commute with reordering
        chain: list[Any] = []
        tensor = quant.input[0]
        while (tensor in producer and producer[tensor].op_type in HOISTED_OPS
               and len(consumers[tensor]) == 1):
            chain.append(producer[tensor])
            tensor = chain[-1].input[0]
        if not chain or tensor not in inputs:
            continue
        floats = {o for n in chain for o in n.output}
        early = f"{quant.output[0]}_early"
        quant.input[0], chain[-1].input[0] = tensor, early
        chain[0].output[0], quant.output[0] = quant.output[0], early
        keep = [v for v in graph.value_info if v.name not in floats]  # they hold uint8 now
        del graph.value_info[:]
        graph.value_info.extend(keep)
        nodes = [n for n in graph.node if n is not quant]
        nodes.insert(next(k for k, n in enumerate(nodes) if n is chain[-1]), quant)
        del graph.node[:]
        graph.node.extend(nodes)
        return True
    return False
