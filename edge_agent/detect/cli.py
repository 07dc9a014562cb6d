"""`edge-agent detect`: run the detector on one image and print what it found.

Never imports onnxruntime before the command runs, never shows a traceback for a bad input."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("detect", help="run the detector on one image",
                       description="Detect objects in one image; boxes in image pixels.")
    p.add_argument("--model", required=True, help="ONNX model file")
    p.add_argument("--image", required=True, help="image file (anything OpenCV reads)")
    p.add_argument("--format", default="auto", choices=["auto", "yolox", "ultralytics", "e2e"],
                   help="output family (default: recognised from the model)")
    p.add_argument("--score", type=float, default=0.35, help="score threshold (default 0.35)")
    p.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "opencv"],
                   help="inference engine (default onnxruntime)")
    p.add_argument("--labels", help="labels file, one name per line")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from pydantic import ValidationError

    from edge_agent.config import DetectorConfig, format_errors
    from edge_agent.detect.detector import Detector
    from edge_agent.detect.errors import ModelError

    try:
        cfg = DetectorConfig(model=Path(args.model), format=args.format, score=args.score,
                             threads=args.threads, backend=args.backend,
                             labels=Path(args.labels) if args.labels else None)
    except ValidationError as exc:
        for line in format_errors(exc):
            print(f"detect: --{line}", file=sys.stderr)
        return 2
    image_path = Path(args.image)
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR) if image_path.is_file() else None
    if image is None:
        why = ("not found" if not image_path.exists() else
               "not a file" if not image_path.is_file() else "cannot decode it as an image")
        print(f"{image_path}: {why}", file=sys.stderr)
        return 2
    try:
        detector = Detector.from_config(cfg)
    except ModelError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    found = detector.detect(np.asarray(image, np.uint8))  # imread gives uint8: no copy
    ms = (time.perf_counter() - t0) * 1000
    if args.json:
        print(json.dumps([d.to_json() for d in found]))
        return 0
    w, h = detector.input_size
    print(f"# {cfg.model.name}: format {detector.format}, input {w}x{h}, "
          f"image {image.shape[1]}x{image.shape[0]}, {len(found)} found in {ms:.0f} ms")
    print(f"{'label':<16} {'id':>3} {'score':>6} {'x1':>7} {'y1':>7} {'x2':>7} {'y2':>7}")
    for d in found:
        x1, y1, x2, y2 = d.box
        print(f"{d.label:<16} {d.class_id:>3} {d.score:>6.3f} "
              f"{x1:>7.1f} {y1:>7.1f} {x2:>7.1f} {y2:>7.1f}")
    return 0
