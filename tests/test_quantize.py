"""int8 models: `edge-agent models quantize` writes a file the agent loads as it is, and that
still finds the people of vtest.avi; mistakes give a one-line error and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edge_agent.agent import Agent
from edge_agent.capture.frame import Frame
from edge_agent.config import load_config
from edge_agent.modeltools.agreement import agree
from sim.demo import CAMERA, camera_config
from tests.conftest import MODELS

CLI = [sys.executable, "-m", "edge_agent.cli", "models", "quantize"]


def frame_at(vtest: Path, index: int):
    cap = cv2.VideoCapture(str(vtest))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, img = cap.read()
    cap.release()
    assert ok
    return img


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, vtest_path) -> Path:
    """A folder of a few vtest frames: the CLI reads folders as well as videos."""
    folder = tmp_path_factory.mktemp("calibration")
    for i in range(0, 800, 100):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), frame_at(vtest_path, min(i, 790)))
    return folder


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, calibration) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("models")
    r = subprocess.run(CLI + ["yolox-nano", "--dir", str(folder), "--from", str(MODELS),
                              "--calibration", str(calibration), "--frames", "4"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    return folder / "yolox_nano_int8.onnx", r.stdout


def test_quantize_reports_speed_and_agreement(quantized):
    path, out = quantized
    assert path.is_file() and path.stat().st_size < (MODELS / "yolox_nano.onnx").stat().st_size
    assert "speed: float" in out and "F1" in out and str(path) in out


def test_the_agent_uses_the_int8_file_and_finds_the_people_of_frame_300(
        quantized, tmp_path, vtest_path):
    path, _ = quantized
    cfg = camera_config(CAMERA, tmp_path / "node.toml", clip=vtest_path, model=path, port=1,
                        state_dir=tmp_path / "state", detector={"threads": 1},
                        snapshot={"mode": "off"})
    agent = Agent(load_config(cfg))
    try:
        image = frame_at(vtest_path, 300)
        assert agent.detector.format == "yolox"  # recognised from its outputs, like float
        assert "int8" in agent.detector.metadata.get("quantized", "")
        people = [d for d in agent.detector.detect(image) if d.label == "person"]
        assert len(people) >= 5, people
        agent.process(Frame(image, 0, 1.7e9, 0.0))
        assert agent.stats.detector_runs == 1
    finally:
        agent.spool.close()
    from edge_agent.config import DetectorConfig
    from edge_agent.detect.detector import Detector

    float_people = [d for d in Detector.from_config(DetectorConfig(
        model=MODELS / "yolox_nano.onnx", threads=1)).detect(image) if d.label == "person"]
    assert agree(float_people, people).f1 >= 0.8


def test_the_int8_file_requantizes_nothing_it_only_moves(quantized):
    """Every Concat's inputs carry its output's scale (QLinearConcat copies rather than
    requantizes), and the input is quantized before YOLOX's SpaceToDepth and Gather, so
    they reorder bytes rather than floats."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    path, _ = quantized
    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    image = graph.input[0].name
    assert [n.op_type for n in consumers[image]] == ["QuantizeLinear"]
    assert {n.op_type for n in consumers[consumers[image][0].output[0]]} == {"SpaceToDepth"}
    checked = 0
    for concat in (n for n in graph.node if n.op_type == "Concat"):
        sources = [producer.get(i) for i in concat.input]
        sinks = consumers.get(concat.output[0], [])
        if not all(s is not None and s.op_type == "DequantizeLinear" for s in sources) or \
                [s.op_type for s in sinks] != ["QuantizeLinear"]:
            continue
        scale = float(values[sinks[0].input[1]])
        assert {float(values[s.input[1]]) for s in sources} == {scale}, concat.name
        checked += 1
    assert checked >= 10  # YOLOX-Nano has 17 Concats


def test_quantize_mistakes_exit_2_with_one_line(tmp_path, calibration):
    r = subprocess.run(CLI + ["--dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "give a model name" in r.stderr
    r = subprocess.run(CLI + ["yolox-nano", "--dir", str(tmp_path), "--from", str(MODELS),
                              "--calibration", str(tmp_path / "nowhere")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "calibration source not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(CLI + ["yolo9000", "--dir", str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "unknown model" in r.stderr
    r = subprocess.run(CLI + [str(tmp_path / "absent.onnx"), "--calibration",
                              str(calibration), "--frames", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and "absent.onnx: model file not found" in r.stderr


def test_a_dynamic_input_copy_quantizes_and_stays_dynamic(tmp_path, calibration):
    """`models quantize FILE`: the dynamic copy's int8 file still runs a 4:3 frame at
    416x320, and still finds the people the float model finds."""
    from edge_agent.config import DetectorConfig
    from edge_agent.detect.detector import Detector
    from edge_agent.modeltools.dynamic import make_dynamic

    dynamic = make_dynamic(MODELS / "yolox_nano.onnx", tmp_path / "d.onnx", timing_runs=1).path
    out = tmp_path / "d8.onnx"
    r = subprocess.run(CLI + [str(dynamic), "--out", str(out), "--calibration",
                              str(calibration), "--frames", "4", "--threads", "1"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "F1" in r.stdout
    frame = cv2.imread(str(sorted(calibration.iterdir())[3]))
    q = Detector.from_config(DetectorConfig(model=out, threads=1, classes=["person"]))
    f = Detector.from_config(DetectorConfig(model=MODELS / "yolox_nano.onnx", threads=1,
                                            classes=["person"]))
    assert q.dynamic and q.prepare(frame).crops[0].tensor.shape == (1, 3, 320, 416)
    assert agree(f.detect(frame), q.detect(frame)).f1 >= 0.8
