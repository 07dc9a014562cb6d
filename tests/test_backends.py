"""Inference backends and workers: OpenCV DNN gives onnxruntime's boxes for the same ONNX
file, and several inference workers hand frames back in order."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from edge_agent.agent import Agent
from edge_agent.config import DetectorConfig, load_config
from edge_agent.detect.detector import Detector
from edge_agent.detect.errors import ModelError
from edge_agent.modeltools.agreement import agree
from sim.demo import CAMERA, camera_config
from tests.agent_helpers import short_clip


def frames(vtest: Path, indices: list[int]):
    cap = cv2.VideoCapture(str(vtest))
    out = []
    for i in indices:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, img = cap.read()
        assert ok
        out.append(img)
    cap.release()
    return out


@pytest.fixture(scope="module")
def opencv_restores_threads():
    yield
    cv2.setNumThreads(-1)


@pytest.mark.parametrize("model", ["yolox_path", "fall_model_path", "dynamic_path"])
def test_opencv_dnn_gives_onnxruntime_boxes(request, vtest_path, model,
                                            opencv_restores_threads):
    """The dynamic-input copy that flash.sh installs runs on OpenCV at its nominal size, as
    the fixed model does (onnxruntime runs that size for a whole 416x416 letterbox too)."""
    path = request.getfixturevalue(model)
    ort = Detector.from_config(DetectorConfig(model=path, threads=2))
    if model == "dynamic_path":
        ort = Detector.from_config(DetectorConfig(model=request.getfixturevalue("yolox_path"),
                                                  threads=2))
    cv = Detector.from_config(DetectorConfig(model=path, threads=2, backend="opencv"))
    assert cv.format == ort.format and cv.labels == ort.labels
    with pytest.raises(AttributeError, match="opencv backend"):
        _ = cv.session
    total = 0
    for img in frames(vtest_path, [120, 300]):
        a, b = ort.detect(img), cv.detect(img)
        m = agree(a, b, min_iou=0.99)
        assert m.only_reference == m.only_other == 0, (a, b)
        assert [round(d.score, 3) for d in a] == [round(d.score, 3) for d in b]
        total += m.matched
    assert total >= 2


def test_opencv_backend_names_the_file_of_a_bad_model(tmp_path, opencv_restores_threads):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelError, match="bad.onnx"):
        Detector.from_config(DetectorConfig(model=bad, backend="opencv"))


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_hand_every_frame_back_in_order(broker, tmp_path, yolox_path, vtest_path,
                                                workers):
    """`run` overlaps frames across inference workers; tracking and rules still see every
    frame once, in capture order, and the detector ran on every one (gating off)."""
    clip = short_clip(vtest_path, tmp_path / "clip.avi", start=250, frames=40)
    cfg = camera_config(CAMERA, tmp_path / "node.toml", clip=clip, model=yolox_path,
                        port=broker.port, state_dir=tmp_path / "state", realtime=False,
                        detector={"threads": 1, "workers": workers},
                        motion={"enabled": False}, snapshot={"mode": "off"})
    agent = Agent(load_config(cfg))
    seen: list[int] = []
    complete = agent._complete

    def record(done):  # type: ignore[no-untyped-def]
        seen.append(done.item.frame.index)
        return complete(done)

    agent._complete = record  # type: ignore[method-assign]
    assert agent.run() == 0
    assert seen == list(range(40))
    assert agent.stats.detector_runs == 40
    assert agent.stats.events > 0  # people walk into the zone in these frames
