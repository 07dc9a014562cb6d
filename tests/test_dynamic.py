"""Dynamic-size models: `edge-agent models dynamic` on the real YOLOX-Nano, and region crops
that run at their own (smaller) input on vtest.avi, boxes mapped back to frame pixels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.config import DetectorConfig
from edge_agent.detect.detector import Detector
from edge_agent.detect.errors import ModelError
from edge_agent.detect.letterbox import Letterboxer, crop_input
from edge_agent.detect.types import NOMINAL_KEY
from edge_agent.geometry import iou
from edge_agent.modeltools.compare import compare
from edge_agent.modeltools.dynamic import make_dynamic
from tests.test_detect import read_frames

CLI = [sys.executable, "-m", "edge_agent.cli", "models", "dynamic"]


@pytest.fixture(scope="module")
def frame(vtest_path):
    return read_frames(vtest_path, 300, 1)[0]


@pytest.fixture(scope="module")
def fixed(yolox_path):
    return Detector.from_config(DetectorConfig(model=yolox_path, threads=2, classes=["person"]))


@pytest.fixture(scope="module")
def dynamic(dynamic_path):
    return Detector.from_config(DetectorConfig(model=dynamic_path, threads=2,
                                               classes=["person"]))


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# -- the model tool ----------------------------------------------------------------------
def test_the_copy_has_a_symbolic_height_and_width_and_its_nominal_size(dynamic_path):
    s = session(dynamic_path)
    n, c, h, w = s.get_inputs()[0].shape
    assert (n, c) == (1, 3) and isinstance(h, str) and isinstance(w, str)
    assert s.get_modelmeta().custom_metadata_map[NOMINAL_KEY] == "416x416"


def test_at_the_nominal_size_the_copy_gives_the_originals_outputs(yolox_path, dynamic_path,
                                                                   fixed, frame):
    tensor = fixed.preprocess(frame)[0].copy()  # a real frame, letterboxed as the node does
    original, copy = session(yolox_path), session(dynamic_path)
    a = original.run(None, {"images": tensor})
    b = copy.run(None, {"images": tensor})
    assert len(a) == len(b) == 1 and a[0].shape == b[0].shape == (1, 3549, 85)
    assert np.allclose(a[0], b[0], rtol=1e-4, atol=1e-4)
    small = copy.run(None, {"images": np.zeros((1, 3, 192, 320), np.float32)})[0]
    assert small.shape == (1, 24 * 40 + 12 * 20 + 6 * 10, 85)  # a grid for the smaller input


def test_a_file_that_is_no_model_is_refused_with_its_name_and_why(tmp_path):
    junk = tmp_path / "notes.onnx"
    junk.write_text("not a model\n")
    with pytest.raises(ModelError, match=r"notes\.onnx: not an ONNX model"):
        make_dynamic(junk, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(ModelError, match=r"missing\.onnx: not found"):
        make_dynamic(tmp_path / "missing.onnx", tmp_path / "out.onnx")


def test_a_graph_with_a_fixed_reshape_target_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    target = numpy_helper.from_array(np.array([1, 3, 64 * 64], np.int64), "target")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "target"], ["flat"], name="head_reshape")],
        "fixed", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, [1, 3, 4096])], [target])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    save(model, str(tmp_path / "fixed.onnx"))
    with pytest.raises(ModelError, match=r"fixed\.onnx: Reshape head_reshape has the fixed "
                                         r"target shape \[1, 3, 4096\] \(no -1\)"):
        make_dynamic(tmp_path / "fixed.onnx", tmp_path / "out.onnx")


def test_the_command_writes_the_copy_and_refuses_junk_in_one_line(yolox_path, tmp_path):
    out = tmp_path / "dyn.onnx"
    r = subprocess.run(CLI + [str(yolox_path), "--out", str(out)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "nominal 416x416" in r.stdout and out.is_file()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage")
    r = subprocess.run(CLI + [str(junk), "--out", str(tmp_path / "x.onnx")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]  # one line, no traceback
    assert f"{junk}: not an ONNX model" in r.stderr


# -- the detector on the copy ------------------------------------------------------------
def test_crop_inputs_are_the_crop_at_scale_one_rounded_up_to_32_at_most_nominal(fixed,
                                                                               dynamic):
    nominal = (416, 416)
    assert crop_input(300, 300, nominal) == (320, 320)
    assert crop_input(320, 320, nominal) == (320, 320)
    assert crop_input(100, 60, nominal) == (128, 64)
    assert crop_input(600, 600, nominal) == (416, 416)  # shrunk as the nominal input would
    assert crop_input(500, 300, nominal) == (416, 256)  # scale 416/500 on both sides
    assert dynamic.dynamic and dynamic.crop_input(300, 300) == (320, 320)
    assert not fixed.dynamic and fixed.crop_input(300, 300) == (416, 416)


def test_a_4_3_frame_runs_at_416x320_and_finds_the_people_the_fixed_model_finds(
        fixed, dynamic, vtest_path):
    assert dynamic.input_size == (416, 416)  # the nominal size, the largest input
    frames = read_frames(vtest_path, 0, 701)[::100]
    assert dynamic.prepare(frames[0]).crops[0].tensor.shape == (1, 3, 320, 416)
    assert fixed.prepare(frames[0]).crops[0].tensor.shape == (1, 3, 416, 416)
    c = compare(fixed, dynamic, frames)
    a = c.agreement
    assert a.matched >= 5 * len(frames)  # vtest always has people in the plaza
    # the same pixels at the same scale: only the padding rows below the image are gone
    assert a.only_reference == a.only_other == 0 and a.worst_iou > 0.85


def test_a_crop_around_a_person_runs_smaller_and_finds_them_in_frame_pixels(fixed, dynamic,
                                                                           frame):
    whole = [d for d in fixed.detect(frame) if d.score >= 0.6]
    person = max(whole, key=lambda d: d.score)
    x1, y1, x2, y2 = person.box
    cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
    region = (cx - 150, cy - 150, cx + 150, cy + 150)  # 300 px, inside the 768x576 frame
    assert region[0] >= 0 and region[1] >= 0 and region[2] <= 768 and region[3] <= 576
    prepared = dynamic.prepare(frame, [region])
    assert prepared.crops[0].tensor.shape == (1, 3, 320, 320)  # not 416x416
    assert prepared.crops[0].letterbox.scale_x == pytest.approx(320 / 300)
    found = dynamic.detect_regions(frame, [region])
    assert found and all(region[0] <= d.box[0] and d.box[2] <= region[2] for d in found)
    best = iou(np.array([person.box]), np.array([d.box for d in found])).max()
    assert best > 0.5, (person, found)


def test_crops_of_several_sizes_share_each_ring_slots_buffer(dynamic, frame):
    tensors = [dynamic.preprocess(frame[:s, :s], dynamic.crop_input(s, s))[0]
               for s in (300, 128, 416, 300)]
    assert [t.shape[2:] for t in tensors] == [(320, 320), (128, 128), (416, 416), (320, 320)]
    assert all(np.shares_memory(t, tensors[2]) for t in tensors)  # a ring of one: one buffer


def test_a_letterboxer_switching_sizes_leaves_no_stale_pixels():
    image = np.full((200, 300, 3), 255, np.uint8)
    kw = {"centre": True, "rgb": True, "unit_scale": True}
    reused = Letterboxer(416, 416, **kw)
    reused(np.zeros((400, 400, 3), np.uint8))  # fills the whole buffer with image pixels
    for size in ((320, 224), (416, 416), (128, 96)):
        got, lb = reused(image, size)
        want, lb2 = Letterboxer(*size, **kw)(image)
        assert lb == lb2 and got.shape == want.shape == (1, 3, size[1], size[0])
        assert np.array_equal(got, want)
