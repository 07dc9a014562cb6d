"""The detector: one onnxruntime session, its letterbox, its output adapter, NMS and filters.

The node's hot path: never copies a frame it need not; a model it cannot use fails at load."""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.config import DetectorConfig
from edge_agent.detect import labels as labels_mod
from edge_agent.detect.adapters import Adapter, Candidates, ModelInfo, OutputSpec, select
from edge_agent.detect.errors import ModelError
from edge_agent.detect.letterbox import Letterbox, Letterboxer
from edge_agent.detect.nms import nms
from edge_agent.detect.types import Detection

log = logging.getLogger(__name__)

DEFAULT_SIZE = 640
"""Input size for models with dynamic height/width and no `imgsz` metadata."""
MAX_DET = 300
INPUT_TYPES: dict[str, type[np.floating]] = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16}


class Detector:
    """Not thread-safe: `preprocess` writes one reused input buffer. One per pipeline thread."""

    def __init__(self, cfg: DetectorConfig, session: ort.InferenceSession, adapter: Adapter,
                 info: ModelInfo, labels: list[str], input_dtype: type[np.floating]) -> None:
        self.cfg = cfg
        self.session = session
        self.adapter = adapter
        self.format: str = adapter.key
        self.input_size: tuple[int, int] = (info.input_w, info.input_h)
        self.labels = labels
        self.metadata = info.metadata
        self._input_name = session.get_inputs()[0].name
        self._output_names = [o.name for o in info.outputs]
        self._letterbox = Letterboxer(info.input_w, info.input_h, centre=adapter.centre,
                                      rgb=adapter.rgb, unit_scale=adapter.unit_scale,
                                      dtype=input_dtype)
        self._allowed = _class_filter(cfg.classes, labels, cfg.model)

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> Detector:
        path = Path(cfg.model)
        session = _open_session(path, cfg.threads)
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(path, f"has {len(inputs)} inputs "
                                   f"({', '.join(i.name for i in inputs)}); only models with "
                                   "one image input [1,3,H,W] are supported")
        inp = inputs[0]
        dtype = INPUT_TYPES.get(inp.type)
        if dtype is None:
            raise ModelError(path, f"input {inp.name} is {inp.type}; expected float or float16")
        meta = dict(session.get_modelmeta().custom_metadata_map)
        in_w, in_h = _input_size(path, inp.name, list(inp.shape), meta)
        info = ModelInfo(path, in_w, in_h, _output_specs(session, path, dtype, in_w, in_h), meta)
        adapter = select(info, cfg.format)
        names = labels_mod.resolve(meta, cfg.labels, adapter.num_classes, path)
        det = cls(cfg, session, adapter, info, names, dtype)
        log.info("event=detector_loaded model=%s format=%s input=%dx%d classes=%s threads=%d",
                 path, det.format, in_w, in_h, adapter.num_classes or "?", cfg.threads)
        return det

    def preprocess(self, image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.floating],
                                                                Letterbox]:
        """The tensor is the detector's reused buffer: valid until the next call."""
        return self._letterbox(_as_bgr(image))

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """Boxes in `image` pixels, best score first."""
        return self._run(image, 0, 0)

    def detect_region(self, image: npt.NDArray[np.uint8],
                      region: tuple[int, int, int, int]) -> list[Detection]:
        """Detect inside x1, y1, x2, y2 (clipped to the image); boxes in full-image pixels."""
        h, w = image.shape[:2]
        x1, y1 = max(0, int(region[0])), max(0, int(region[1]))
        x2, y2 = min(w, int(region[2])), min(h, int(region[3]))
        if x2 <= x1 or y2 <= y1:
            return []
        return self._run(image[y1:y2, x1:x2], x1, y1)

    def label(self, class_id: int) -> str:
        return labels_mod.label_name(self.labels, class_id)

    def _run(self, image: npt.NDArray[np.uint8], ox: int, oy: int) -> list[Detection]:
        tensor, lb = self.preprocess(image)
        outputs = self.session.run(self._output_names, {self._input_name: tensor})
        return self.postprocess(outputs, lb, ox, oy)

    def postprocess(self, outputs: Sequence[npt.NDArray[np.generic]], lb: Letterbox,
                    ox: int = 0, oy: int = 0) -> list[Detection]:
        """Score threshold (in the adapter), class filter, NMS, back to source pixels, area."""
        cfg = self.cfg
        boxes, scores, ids = self.adapter.decode(outputs, cfg.score)
        if self._allowed is not None and len(ids):
            mask = np.isin(ids, self._allowed)
            boxes, scores, ids = boxes[mask], scores[mask], ids[mask]
        if len(ids) == 0:
            return []
        if self.adapter.needs_nms:
            order = nms(boxes, scores, ids, cfg.nms_iou, MAX_DET)
        else:
            order = np.argsort(-scores, kind="stable")[:MAX_DET]
        boxes, scores, ids = _take(Candidates(boxes, scores, ids), order)
        lb.to_source(boxes)
        wh = boxes[:, 2:] - boxes[:, :2]
        area = wh[:, 0] * wh[:, 1]
        keep = (wh[:, 0] > 0) & (wh[:, 1] > 0) & (area >= cfg.min_box_area)
        if cfg.max_box_area is not None:
            keep &= area <= cfg.max_box_area
        if ox or oy:
            boxes += np.array([ox, oy, ox, oy], np.float32)
        label = self.label
        return [Detection(label(c), c, s, (b[0], b[1], b[2], b[3]))
                for b, s, c in zip(boxes[keep].tolist(), scores[keep].tolist(),
                                   ids[keep].tolist(), strict=True)]


def _take(c: Candidates, idx: npt.NDArray[np.intp]) -> Candidates:
    return Candidates(c.boxes[idx], c.scores[idx], c.class_ids[idx])


def _as_bgr(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if image.dtype != np.uint8:
        raise ValueError(f"detector needs a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)  # type: ignore[return-value]
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)  # type: ignore[return-value]
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"detector needs a BGR image HxWx3, got shape {image.shape}")
    return image


def _open_session(path: Path, threads: int) -> ort.InferenceSession:
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


def _input_size(path: Path, name: str, shape: list[object],
                meta: dict[str, str]) -> tuple[int, int]:
    """(width, height); dynamic dims come from Ultralytics `imgsz` metadata, else 640."""
    dims = "[" + ",".join(map(str, shape)) + "]"
    if len(shape) != 4:
        raise ModelError(path, f"input {name} {dims} is not an image tensor [1,3,H,W]")
    n, c, h, w = shape
    if isinstance(c, int) and c != 3:
        hint = " (NHWC? only NCHW models are supported)" if w == 3 else ""
        raise ModelError(path, f"input {name} {dims} is not an image tensor [1,3,H,W]{hint}")
    if isinstance(n, int) and n != 1:
        raise ModelError(path, f"input {name} {dims} has batch {n}; expected 1")
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return w, h
    size = (DEFAULT_SIZE, DEFAULT_SIZE)
    try:
        imgsz = ast.literal_eval(meta.get("imgsz", "None"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        imgsz = None
    if isinstance(imgsz, int) and imgsz > 0:
        size = (imgsz, imgsz)
    elif (isinstance(imgsz, list | tuple) and len(imgsz) == 2
          and all(isinstance(v, int) and v > 0 for v in imgsz)):
        size = (int(imgsz[1]), int(imgsz[0]))  # Ultralytics stores (height, width)
    return (w if isinstance(w, int) and w > 0 else size[0],
            h if isinstance(h, int) and h > 0 else size[1])


def _output_specs(session: ort.InferenceSession, path: Path, dtype: type[np.floating],
                  in_w: int, in_h: int) -> tuple[OutputSpec, ...]:
    """Declared output shapes; when any dim is dynamic, the shapes of one trial run."""
    outs = session.get_outputs()
    specs = tuple(OutputSpec(o.name, tuple(d if isinstance(d, int) else -1 for d in o.shape),
                             o.type) for o in outs)
    if all(d >= 0 for s in specs for d in s.shape):
        return specs
    probe = np.zeros((1, 3, in_h, in_w), dtype)
    try:
        results = session.run([o.name for o in outs], {session.get_inputs()[0].name: probe})
    except Exception as exc:  # onnxruntime's pybind errors
        raise ModelError(path, f"trial run at {in_w}x{in_h} failed: {exc}") from None
    return tuple(OutputSpec(s.name, tuple(np.shape(r)), s.dtype)
                 for s, r in zip(specs, results, strict=True))


def _class_filter(classes: list[str] | None, labels: list[str],
                  path: Path) -> npt.NDArray[np.intp] | None:
    """Class ids to keep; a name the model does not know is an error, not an empty filter."""
    if classes is None:
        return None
    ids: set[int] = set()
    missing: list[str] = []
    for name in classes:
        hits = [i for i, label in enumerate(labels) if label == name]
        m = re.fullmatch(r"class_(\d+)", name)
        if not hits and m:
            hits = [int(m[1])]
        if not hits:
            missing.append(name)
        ids.update(hits)
    if missing:
        known = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
        raise ModelError(path, f"detector.classes: {', '.join(map(repr, missing))} not among "
                               f"the model's labels ({known or 'none: give detector.labels'})")
    return np.array(sorted(ids), np.intp)
