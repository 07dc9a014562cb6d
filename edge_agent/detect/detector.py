"""The detector: one inference backend, its letterbox, its output adapter, NMS and filters.

The node's hot path: never copies a frame it need not; a model it cannot use fails at load."""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.config import DetectorConfig
from edge_agent.detect import labels as labels_mod
from edge_agent.detect.adapters import Adapter, Candidates, ModelInfo, OutputSpec, select
from edge_agent.detect.backends import Backend, open_backend
from edge_agent.detect.backends.base import INPUT_TYPES, Outputs
from edge_agent.detect.backends.ort import OrtBackend, open_session
from edge_agent.detect.errors import ModelError
from edge_agent.detect.letterbox import Letterbox, Letterboxer, crop_input
from edge_agent.detect.nms import nms
from edge_agent.detect.types import NOMINAL_KEY, Detection
from edge_agent.geometry import Region

log = logging.getLogger(__name__)

DEFAULT_SIZE = 640
"""Input size for models with dynamic height/width and no `imgsz` or `nominal_input` metadata."""
MAX_DET = 300
EDGE_PX = 2.0
"""A box this close to a crop edge that lies inside the frame was cut by the crop: it is
someone the crop was not placed for (those get a margin), and half a person is no box."""



@dataclass(frozen=True, slots=True)
class Crop:
    """One tensor ready for inference and how its boxes map back to the frame."""

    tensor: npt.NDArray[np.floating]
    letterbox: Letterbox
    x: int
    y: int
    inner: tuple[bool, bool, bool, bool]
    """Which edges (left, top, right, bottom) lie inside the frame rather than on its border."""

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) of the tensor; None when there is none (boxes mapped back only)."""
        t = self.tensor
        return (int(t.shape[3]), int(t.shape[2])) if t.ndim == 4 else None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A frame (or its regions) letterboxed and waiting for inference; its tensors belong to
    the detector's ring and stay valid until the ring comes round again."""

    crops: tuple[Crop, ...]


class Detector:
    """Not thread-safe, except `infer`: pre- and post-processing write the detector's own
    buffers, so they run on one thread (the pipeline's), while inference may run on several
    workers at once, each with its own `backend.for_worker()`.

    A model whose input height and width are dynamic, with a known nominal size (metadata
    `nominal_input`, as `edge-agent models dynamic` writes, or Ultralytics' `imgsz`), is
    `dynamic`: the whole frame and each region crop run at their own input size
    (`crop_input`), so a small crop costs a fraction of an inference, and a 4:3 frame runs
    at 416x320 instead of 416x416, its padding rows never computed (the same pixels at the
    same scale, for less CPU: docs/performance.md). The ring's letterboxers hold a
    nominal-size buffer each and view its front for a smaller input: no size allocates
    anything once the ring is made."""

    def __init__(self, cfg: DetectorConfig, backend: Backend, adapter: Adapter,
                 info: ModelInfo, labels: list[str], input_dtype: type[np.floating],
                 dynamic: bool = False) -> None:
        self.cfg = cfg
        self.backend = backend
        self.adapter = adapter
        self.format: str = adapter.key
        self.input_size: tuple[int, int] = (info.input_w, info.input_h)
        """The nominal input size: the largest input, and the only one of a fixed model."""
        self.dynamic = dynamic
        """Whole frames and region crops run at their own input size (`crop_input`)."""
        self.labels = labels
        self.metadata = info.metadata
        self._dtype = input_dtype
        self._ring: list[Letterboxer] = [self._letterboxer()]
        self._turn = 0
        self._keep = _class_table(_class_filter(cfg.classes, labels, cfg.model))
        self.redact_ids: frozenset[int] = frozenset()
        """Classes found for redaction whatever `classes` keeps (`set_redaction`)."""
        self._scan: npt.NDArray[np.bool_] | None = self._keep
        """What decoding keeps: `classes` and the redaction classes."""

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> Detector:
        path = Path(cfg.model)
        session = open_session(path, cfg.threads, cfg.spin)
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
        dynamic = (cfg.backend == "onnxruntime"  # OpenCV DNN: one input size, unchecked
                   and _symbolic_hw(list(inp.shape)) and _nominal(meta) is not None)
        info = ModelInfo(path, in_w, in_h, _output_specs(session, path, dtype, in_w, in_h), meta)
        adapter = select(info, cfg.format)
        names = labels_mod.resolve(meta, cfg.labels, adapter.num_classes, path)
        backend = open_backend(cfg.backend, path, session, cfg.threads,
                               [o.name for o in info.outputs], (in_h, in_w))
        det = cls(cfg, backend, adapter, info, names, dtype, dynamic)
        det.infer(np.zeros((1, 3, in_h, in_w), dtype))  # the first run allocates: not on a frame
        log.info("event=detector_loaded model=%s format=%s input=%dx%d%s classes=%s "
                 "backend=%s threads=%d", path, det.format, in_w, in_h,
                 " input_hw=dynamic" if dynamic else "", adapter.num_classes or "?",
                 backend.name, cfg.threads)
        return det

    @property
    def session(self) -> ort.InferenceSession:
        """The onnxruntime session (benchmarks compare against its bare `run`)."""
        if not isinstance(self.backend, OrtBackend):
            raise AttributeError(f"the {self.backend.name} backend has no onnxruntime session")
        return self.backend.session

    # -- the three stages, for a pipeline that overlaps them ------------------------------
    def reserve(self, tensors: int) -> None:
        """Keep at least this many input tensors in the ring: one per crop that may be
        prepared or in inference at the same time."""
        while len(self._ring) < tensors:
            self._ring.append(self._letterboxer())

    def preprocess(self, image: npt.NDArray[np.uint8], size: tuple[int, int] | None = None
                   ) -> tuple[npt.NDArray[np.floating], Letterbox]:
        """The tensor is one of the ring's reused buffers: valid until the ring comes round
        (with the default ring of one: until the next call). `size`: (width, height) of the
        tensor for a dynamic model, at most the nominal size; default the nominal size."""
        letterbox = self._ring[self._turn]
        self._turn = (self._turn + 1) % len(self._ring)
        return letterbox(_as_bgr(image), size or self.input_size)

    def set_redaction(self, labels: list[str]) -> list[str]:
        """Find these labels too, for redaction only, whatever `classes` keeps: a vehicle
        camera still finds the people it must blur. Returns the labels the model does not
        have (they cannot be redacted)."""
        ids = {i for i, name in enumerate(self.labels) if name in labels}
        self.redact_ids = frozenset(ids)
        if self._keep is None:
            self._scan = None
        else:
            keep = np.flatnonzero(self._keep).tolist()
            self._scan = _class_table(np.array(sorted(set(keep) | ids), np.intp))
        return [name for name in labels if name not in self.labels]

    def keeps(self, class_id: int) -> bool:
        """Whether `classes` keeps this class (the rest is found for redaction only)."""
        keep = self._keep
        return keep is None or (0 <= class_id < len(keep) and bool(keep[class_id]))

    def split(self, found: list[Detection]) -> tuple[list[Detection], list[Detection]]:
        """(what `classes` keeps, what is to be redacted) from one `finish`."""
        kept = found if self._scan is self._keep else [d for d in found
                                                        if self.keeps(d.class_id)]
        return kept, [d for d in found if d.class_id in self.redact_ids]

    def detect_redaction(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """The redaction classes in the whole image (for a snapshot of a frame the detector
        did not run on whole)."""
        return self.split(self.detect_regions(image, None, everything=True))[1]

    def crop_input(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the input a crop of this size runs at: the nominal size for a
        fixed model, `letterbox.crop_input` for a dynamic one."""
        return crop_input(width, height, self.input_size) if self.dynamic else self.input_size

    def prepare(self, image: npt.NDArray[np.uint8],
                regions: Sequence[Region] | None = None) -> Prepared:
        """Letterbox the whole image, or each region of it (clipped to the image; empty ones
        are skipped)."""
        h, w = image.shape[:2]
        if regions is None:
            tensor, lb = self.preprocess(image, self.crop_input(w, h))
            return Prepared((Crop(tensor, lb, 0, 0, (False, False, False, False)),))
        crops: list[Crop] = []
        for region in regions:
            x1, y1 = max(0, int(region[0])), max(0, int(region[1]))
            x2, y2 = min(w, int(region[2])), min(h, int(region[3]))
            if x2 <= x1 or y2 <= y1:
                continue
            tensor, lb = self.preprocess(image[y1:y2, x1:x2], self.crop_input(x2 - x1, y2 - y1))
            crops.append(Crop(tensor, lb, x1, y1, (x1 > 0, y1 > 0, x2 < w, y2 < h)))
        return Prepared(tuple(crops))

    def infer(self, tensor: npt.NDArray[np.floating], backend: Backend | None = None
              ) -> Outputs:
        """Safe from several threads at once when each passes its own `for_worker()`."""
        return (backend or self.backend).run(tensor)

    def finish(self, prepared: Prepared, outputs: Sequence[Outputs],
               everything: bool = False) -> list[Detection]:
        """Boxes in frame pixels, best score first; boxes of overlapping regions are merged
        by one more class-aware NMS. `everything`: the redaction classes too (`split`)."""
        keep = self._scan if everything else self._keep
        parts = [self._candidates(out, c, keep) for c, out in zip(prepared.crops, outputs,
                                                                   strict=True)]
        if len(parts) == 1:
            return self._detections(parts[0])
        if not parts:
            return []
        merged = Candidates(np.concatenate([p.boxes for p in parts]),
                            np.concatenate([p.scores for p in parts]),
                            np.concatenate([p.class_ids for p in parts]))
        if len(merged.scores) == 0:
            return []
        return self._detections(_take(merged, nms(*merged, self.cfg.nms_iou, MAX_DET)))

    # -- one call, for everything that does not need the overlap -----------------------------
    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """Boxes in `image` pixels, best score first."""
        return self.detect_regions(image, None)

    def detect_region(self, image: npt.NDArray[np.uint8], region: Region) -> list[Detection]:
        """Detect inside x1, y1, x2, y2 (clipped to the image); boxes in full-image pixels.
        Unlike `detect_regions`, boxes cut by the region's edge are kept: the caller chose
        the region and judges them itself."""
        prepared = self.prepare(image, [region])
        crops = tuple(Crop(c.tensor, c.letterbox, c.x, c.y, (False, False, False, False))
                      for c in prepared.crops)
        return self.finish(Prepared(crops), [self.infer(c.tensor) for c in crops])

    def detect_regions(self, image: npt.NDArray[np.uint8],
                       regions: Sequence[Region] | None,
                       everything: bool = False) -> list[Detection]:
        """The whole image (None) or the given regions, merged."""
        prepared = self.prepare(image, regions)
        return self.finish(prepared, [self.infer(c.tensor) for c in prepared.crops],
                           everything)

    def label(self, class_id: int) -> str:
        return labels_mod.label_name(self.labels, class_id)

    # -- internals ---------------------------------------------------------------------
    def _letterboxer(self) -> Letterboxer:
        w, h = self.input_size
        a = self.adapter
        return Letterboxer(w, h, centre=a.centre, rgb=a.rgb, unit_scale=a.unit_scale,
                           dtype=self._dtype)

    def _candidates(self, outputs: Outputs, crop: Crop,
                    keep: npt.NDArray[np.bool_] | None) -> Candidates:
        """One crop's boxes in frame pixels after its own NMS and the box filters."""
        cfg = self.cfg
        boxes, scores, ids = self.adapter.decode(outputs, cfg.score, crop.input_size)
        if keep is not None and len(ids):
            mask = (ids >= 0) & (ids < len(keep))
            mask[mask] = keep[ids[mask]]
            boxes, scores, ids = boxes[mask], scores[mask], ids[mask]
        if len(ids) == 0:
            return _EMPTY
        if self.adapter.needs_nms:
            order = nms(boxes, scores, ids, cfg.nms_iou, MAX_DET)
        else:
            order = np.argsort(-scores, kind="stable")[:MAX_DET]
        boxes, scores, ids = _take(Candidates(boxes, scores, ids), order)
        lb = crop.letterbox
        lb.to_source(boxes)
        wh = boxes[:, 2:] - boxes[:, :2]
        area = wh[:, 0] * wh[:, 1]
        keep_box = (wh[:, 0] > 0) & (wh[:, 1] > 0) & (area >= cfg.min_box_area)
        if cfg.max_box_area is not None:
            keep_box &= area <= cfg.max_box_area
        left, top, right, bottom = crop.inner
        if left:
            keep_box &= boxes[:, 0] > EDGE_PX
        if top:
            keep_box &= boxes[:, 1] > EDGE_PX
        if right:
            keep_box &= boxes[:, 2] < lb.width - EDGE_PX
        if bottom:
            keep_box &= boxes[:, 3] < lb.height - EDGE_PX
        boxes = boxes[keep_box]
        if crop.x or crop.y:
            boxes += np.array([crop.x, crop.y, crop.x, crop.y], np.float32)
        return Candidates(boxes, scores[keep_box], ids[keep_box])

    def _detections(self, c: Candidates) -> list[Detection]:
        label = self.label
        return [Detection(label(i), i, s, (b[0], b[1], b[2], b[3]))
                for b, s, i in zip(c.boxes.tolist(), c.scores.tolist(), c.class_ids.tolist(),
                                   strict=True)]


_EMPTY = Candidates(np.empty((0, 4), np.float32), np.empty(0, np.float32),
                    np.empty(0, np.intp))


def _take(c: Candidates, idx: npt.NDArray[np.intp]) -> Candidates:
    return Candidates(c.boxes[idx], c.scores[idx], c.class_ids[idx])


def _class_table(ids: npt.NDArray[np.intp] | None) -> npt.NDArray[np.bool_] | None:
    """A lookup table by class id: one fancy index instead of np.isin's sort per frame."""
    if ids is None:
        return None
    table = np.zeros(int(ids.max()) + 1 if len(ids) else 0, bool)
    table[ids] = True
    return table


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


def _input_size(path: Path, name: str, shape: list[object],
                meta: dict[str, str]) -> tuple[int, int]:
    """(width, height); dynamic dims come from `nominal_input` or Ultralytics `imgsz`
    metadata, else 640."""
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
    size = _nominal(meta) or (DEFAULT_SIZE, DEFAULT_SIZE)
    return (w if isinstance(w, int) and w > 0 else size[0],
            h if isinstance(h, int) and h > 0 else size[1])


def _symbolic_hw(shape: list[object]) -> bool:
    """Height and width are both symbolic (named or unnamed), not numbers."""
    return len(shape) == 4 and not isinstance(shape[2], int) and not isinstance(shape[3], int)


def _nominal(meta: dict[str, str]) -> tuple[int, int] | None:
    """(width, height) a dynamic model was made for: `nominal_input` "WxH" metadata, else
    Ultralytics' `imgsz` (an int, or [height, width]); None when neither says."""
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", meta.get(NOMINAL_KEY, ""))
    if m and int(m[1]) > 0 and int(m[2]) > 0:
        return int(m[1]), int(m[2])
    try:
        imgsz = ast.literal_eval(meta.get("imgsz", "None"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(imgsz, int) and not isinstance(imgsz, bool) and imgsz > 0:
        return imgsz, imgsz
    if (isinstance(imgsz, list | tuple) and len(imgsz) == 2
            and all(isinstance(v, int) and v > 0 for v in imgsz)):
        return int(imgsz[1]), int(imgsz[0])  # Ultralytics stores (height, width)
    return None


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
