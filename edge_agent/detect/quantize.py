"""int8 variants of a detector model: static QDQ quantization calibrated on frames like the
node's own, checked for speed and agreement against the float model before anyone uses it.

Writes one new file; never changes the float model, and never reports a file it did not check."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.config import DetectorConfig
from edge_agent.detect.compare import Comparison, compare
from edge_agent.detect.detector import Detector

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
        q.quantize_static(str(prepared), str(dst), Reader(), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8, calibrate_method=calibrate,
                          extra_options={"CalibMovingAverage": MOVING_AVERAGE})
    finally:
        logging.getLogger().setLevel(quiet)
    out = onnx.load(str(dst))
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    meta["quantized"] = (f"int8 static QDQ, per-channel weights, {method} calibration on "
                         f"{len(calibration)} frames, from {src.name}")
    del out.metadata_props[:]
    for key, value in meta.items():
        prop = out.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(out, str(dst))

