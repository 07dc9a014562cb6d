"""Detect room: real YOLOX-Nano and YOLOv8 fall models on vtest.avi, tiny real ONNX models
built here for the end-to-end and unknown layouts, letterbox, NMS, labels and filters."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.config import DetectorConfig
from edge_agent.detect import labels as labels_mod
from edge_agent.detect.detector import Detector
from edge_agent.detect.errors import ModelError
from edge_agent.detect.letterbox import fit
from edge_agent.detect.nms import nms
from edge_agent.geometry import iou

W, H = 768, 576  # vtest.avi


def read_frames(path: Path, first: int, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, first)
    frames = []
    for _ in range(count):
        ok, frame = cap.read()
        assert ok, f"{path}: cannot read frame"
        frames.append(frame)
    cap.release()
    return frames


def tiny_model(path: Path, outputs: dict[str, np.ndarray], *,
               input_shape: tuple[int | str, ...] = (1, 3, 320, 320),
               metadata: dict[str, str] | None = None, dynamic: bool = False) -> Path:
    """A real ONNX model whose outputs are constants (plus 0 * mean(input), so the input is
    used): what an end-to-end detector would return for any image."""
    from onnx import TensorProto, helper, numpy_helper, save

    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32,
             np.dtype(np.int64): TensorProto.INT64}
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nil"])]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero")]
    outs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value, f"{name}_const"))
        if value.dtype == np.float32:
            nodes.append(helper.make_node("Add", [f"{name}_const", "nil"], [name]))
        else:
            nodes.append(helper.make_node("Identity", [f"{name}_const"], [name]))
        dims = [f"{name}_{i}" for i in range(value.ndim)] if dynamic else list(value.shape)
        outs.append(helper.make_tensor_value_info(name, types[value.dtype], dims))
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))
    graph = helper.make_graph(nodes, "tiny", [inp], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, val in (metadata or {}).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, val
    save(model, str(path))
    return path


def persons(dets):
    return [d for d in dets if d.label == "person"]


def best_iou(box, others) -> float:
    if not others:
        return 0.0
    return float(iou(np.array([box]), np.array([o.box for o in others])).max())


@pytest.fixture(scope="module")
def frames(vtest_path):
    return read_frames(vtest_path, 300, 2)


@pytest.fixture(scope="module")
def yolox(yolox_path):
    return Detector.from_config(DetectorConfig(model=yolox_path, score=0.3))


@pytest.fixture(scope="module")
def yolox_300(yolox, frames):
    return yolox.detect(frames[0])


@pytest.fixture(scope="module")
def fall(fall_model_path):
    return Detector.from_config(DetectorConfig(model=fall_model_path, threads=2))


# -- YOLOX-Nano on vtest ---------------------------------------------------------------
def test_yolox_finds_the_people_of_frame_300(yolox, yolox_300):
    assert yolox.format == "yolox"
    assert yolox.input_size == (416, 416)
    assert yolox.labels[0] == "person" and len(yolox.labels) == 80
    people = persons(yolox_300)
    assert len(people) >= 5, yolox_300
    for d in yolox_300:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
        assert d.score >= 0.3
    for d in people:
        x1, y1, x2, y2 = d.box
        assert y2 - y1 > x2 - x1, d  # people stand
        assert y2 > H / 6, d  # their feet are on the ground, not in the sky
    # the reference also shows vehicles parked at the top of the scene
    assert any(d.label in ("car", "truck") and d.box[3] < H / 4 for d in yolox_300)
    scores = [d.score for d in yolox_300]
    assert scores == sorted(scores, reverse=True)


def test_yolox_boxes_are_stable_from_frame_to_frame(yolox, frames, yolox_300):
    now, nxt = persons(yolox_300), persons(yolox.detect(frames[1]))
    matched = sum(best_iou(d.box, nxt) > 0.5 for d in now)
    assert matched >= 0.7 * len(now), (now, nxt)


def test_detect_region_maps_boxes_to_the_full_frame(yolox, frames, yolox_300):
    region = (150, 100, 400, 320)
    inside = [d for d in persons(yolox_300) if d.score > 0.5
              and d.box[0] >= region[0] and d.box[1] >= region[1]
              and d.box[2] <= region[2] and d.box[3] <= region[3]]
    assert len(inside) >= 3
    found = yolox.detect_region(frames[0], region)
    for d in found:
        assert region[0] <= d.box[0] < d.box[2] <= region[2]
        assert region[1] <= d.box[1] < d.box[3] <= region[3]
    for d in inside:
        assert best_iou(d.box, persons(found)) > 0.5, d
    assert yolox.detect_region(frames[0], (500, 500, 400, 600)) == []


# -- the fall model (Ultralytics layout) -----------------------------------------------
def test_fall_model_is_ultralytics_with_metadata_labels(fall, frames, yolox_300):
    assert fall.format == "ultralytics"
    assert fall.labels == ["Normal", "Fall"]
    assert fall.input_size == (640, 640)
    found = fall.detect(frames[0])
    normal = [d for d in found if d.label == "Normal"]
    assert len(normal) >= 3
    for d in found:
        assert 0 <= d.box[0] < d.box[2] <= W and 0 <= d.box[1] < d.box[3] <= H
    overlaps = sum(best_iou(d.box, normal) > 0.5 for d in persons(yolox_300))
    assert overlaps >= 3, (normal, yolox_300)


def test_ultralytics_preprocess_is_rgb_unit_scale_and_centred(fall):
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    tensor, lb = fall.preprocess(image)
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert (lb.pad_x, lb.pad_y) == (0, 80)
    assert np.allclose(tensor[0, :, :80], 114 / 255) and np.allclose(tensor[0, :, 560:], 114 / 255)
    assert np.all(tensor[0, 2, 80:560] == 1.0) and np.all(tensor[0, 0, 80:560] == 0.0)


def test_yolox_preprocess_is_bgr_0_255_top_left_and_reuses_its_buffer(yolox):
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = 255
    tensor, lb = yolox.preprocess(image)
    assert (lb.pad_x, lb.pad_y) == (0, 0)
    assert np.all(tensor[0, 0, :312] == 255) and np.all(tensor[0, 2, :312] == 0)
    assert np.all(tensor[0, :, 312:] == 114)
    portrait, lb2 = yolox.preprocess(np.zeros((W, H, 3), np.uint8))
    assert portrait is tensor  # one buffer, reused
    assert lb2.scale_x == pytest.approx(312 / H)
    assert np.all(portrait[0, :, :, 312:] == 114) and np.all(portrait[0, :, :, :312] == 0)


def test_grey_and_bgra_frames_are_accepted_float_frames_are_not(yolox, frames):
    grey = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)
    assert persons(yolox.detect(grey))
    assert persons(yolox.detect(cv2.cvtColor(frames[0], cv2.COLOR_BGR2BGRA)))
    with pytest.raises(ValueError, match="uint8"):
        yolox.detect(frames[0].astype(np.float32))


# -- format override and bad models ----------------------------------------------------
def test_forcing_ultralytics_on_yolox_is_honoured_with_a_warning(yolox_path, frames,
                                                                 yolox_300, caplog):
    """The override exists for layouts auto-detection cannot tell apart (YOLOv6 exports look
    like a YOLOX grid), so it is trusted; the log says the layout looked like YOLOX."""
    with caplog.at_level(logging.WARNING):
        det = Detector.from_config(DetectorConfig(model=yolox_path, format="ultralytics"))
    assert det.format == "ultralytics"
    assert "looks_like_yolox_raw_grid" in caplog.text
    wrong = det.detect(frames[0])
    assert not any(best_iou(d.box, wrong) > 0.5 for d in persons(yolox_300))


def test_forcing_e2e_on_yolox_names_the_file_and_shape(yolox_path):
    with pytest.raises(ModelError) as err:
        Detector.from_config(DetectorConfig(model=yolox_path, format="e2e"))
    msg = str(err.value)
    assert msg.startswith(f"{yolox_path}: format e2e needs")
    assert "[1,3549,85]" in msg and "\n" not in msg


def test_forcing_yolox_on_the_fall_model_names_the_shape(fall_model_path):
    with pytest.raises(ModelError, match=r"\[1,6,8400\]"):
        Detector.from_config(DetectorConfig(model=fall_model_path, format="yolox"))


def test_missing_empty_and_corrupt_models(tmp_path):
    with pytest.raises(ModelError, match="model file not found") as err:
        Detector.from_config(DetectorConfig(model=tmp_path / "nope.onnx"))
    assert err.value.path == tmp_path / "nope.onnx"
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty file"):
        Detector.from_config(DetectorConfig(model=empty))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ModelError) as err:
        Detector.from_config(DetectorConfig(model=bad))
    assert str(err.value) == f"{bad}: not an ONNX model (protobuf parse failed)"
    with pytest.raises(ModelError, match="is a directory"):
        Detector.from_config(DetectorConfig(model=tmp_path))


def test_unknown_output_layout_is_a_model_error(tmp_path):
    path = tiny_model(tmp_path / "odd.onnx", {"logits": np.zeros((1, 10), np.float32)})
    with pytest.raises(ModelError) as err:
        Detector.from_config(DetectorConfig(model=path))
    msg = str(err.value)
    assert msg.startswith(f"{path}: unknown output layout") and "logits [1,10]" in msg


def test_model_with_a_non_image_input_is_a_model_error(tmp_path):
    path = tiny_model(tmp_path / "flat.onnx", {"out": np.zeros((1, 5, 6), np.float32)},
                      input_shape=(1, 300))
    with pytest.raises(ModelError, match=r"input images \[1,300\] is not an image tensor"):
        Detector.from_config(DetectorConfig(model=path))


# -- end-to-end models (NMS inside), built here ----------------------------------------
ROWS = np.array([[[10, 50, 110, 150, 0.9, 0],  # input px of a 320x320 model
                  [0, 40, 320, 280, 0.8, 2],  # the whole letterboxed image
                  [5, 5, 6, 6, 0.1, 1]]], np.float32)  # below the score threshold
META = {"names": "{0: 'person', 1: 'bicycle', 2: 'car'}"}


def test_e2e_rows_come_back_in_original_pixels(tmp_path):
    path = tiny_model(tmp_path / "e2e.onnx", {"dets": ROWS}, metadata=META)
    det = Detector.from_config(DetectorConfig(model=path))
    assert det.format == "e2e" and det.labels == ["person", "bicycle", "car"]
    found = det.detect(np.zeros((480, 640, 3), np.uint8))  # scale 0.5, centred: pad_y 40
    assert [(d.label, d.class_id) for d in found] == [("person", 0), ("car", 2)]
    assert found[0].box == pytest.approx((20, 20, 220, 220))
    assert found[1].box == pytest.approx((0, 0, 640, 480))
    assert found[0].score == pytest.approx(0.9)


def test_e2e_k7_rows_and_the_four_output_form(tmp_path):
    rows7 = np.array([[0, 10, 50, 110, 150, 2, 0.9], [1, 0, 40, 320, 280, 1, 0.99]],
                     np.float32)  # the second is batch 1: not ours
    path = tiny_model(tmp_path / "k7.onnx", {"dets": rows7})
    det = Detector.from_config(DetectorConfig(model=path))
    found = det.detect(np.zeros((480, 640, 3), np.uint8))
    assert [(d.label, d.box) for d in found] == [("class_2", pytest.approx((20, 20, 220, 220)))]

    four = {"num_dets": np.array([[2]], np.int32),
            "det_boxes": np.array([[[10, 50, 110, 150], [0, 40, 320, 280], [0, 40, 9, 9]]],
                                  np.float32),
            "det_scores": np.array([[0.5, 0.7, 0.99]], np.float32),  # the third is past num
            "det_classes": np.array([[1, 0, 0]], np.int32)}
    path = tiny_model(tmp_path / "four.onnx", four)
    det = Detector.from_config(DetectorConfig(model=path, format="e2e"))
    found = det.detect(np.zeros((480, 640, 3), np.uint8))
    assert [(d.class_id, d.score) for d in found] == [(0, pytest.approx(0.7)),
                                                      (1, pytest.approx(0.5))]
    assert found[0].box == pytest.approx((0, 0, 640, 480))


def test_dynamic_input_size_from_imgsz_metadata_else_640(tmp_path):
    dyn = (1, 3, "height", "width")
    path = tiny_model(tmp_path / "dyn.onnx", {"dets": ROWS}, input_shape=dyn,
                      metadata={"imgsz": "[320, 480]", **META})
    assert Detector.from_config(DetectorConfig(model=path)).input_size == (480, 320)
    path = tiny_model(tmp_path / "dyn640.onnx", {"dets": ROWS}, input_shape=dyn, dynamic=True)
    det = Detector.from_config(DetectorConfig(model=path))  # output shape from a trial run
    assert det.input_size == (640, 640) and det.format == "e2e"
    assert det.detect(np.zeros((480, 640, 3), np.uint8))[0].box == pytest.approx(
        (10, 0, 110, 70))  # scale 1, pad_y 80: y -30 is clipped to the image


def test_box_area_bounds_are_in_source_pixels(tmp_path):
    path = tiny_model(tmp_path / "e2e.onnx", {"dets": ROWS}, metadata=META)
    image = np.zeros((480, 640, 3), np.uint8)
    big = Detector.from_config(DetectorConfig(model=path, min_box_area=50_000)).detect(image)
    assert [d.label for d in big] == ["car"]  # 640x480, not the 200x200 person
    small = Detector.from_config(DetectorConfig(model=path, max_box_area=40_000)).detect(image)
    assert [d.label for d in small] == ["person"]  # exactly 200x200 is within the bound


def test_ultralytics_layouts_without_metadata_by_grid_count(tmp_path):
    """YOLOv5 [1,3*grid,5+nc] with objectness and YOLOv8 [1,4+nc,grid], told apart from a
    YOLOX grid by the cell count of the 416x416 input (3549)."""
    v5 = np.zeros((1, 3 * 3549, 7), np.float32)
    v5[0, 0] = [100, 100, 40, 80, 0.9, 0.1, 0.8]  # class 1 at 0.72
    v5[0, 1] = [102, 100, 40, 80, 0.8, 0.0, 0.7]  # same class, overlapping: suppressed
    v5[0, 2] = [100, 100, 40, 80, 0.9, 0.9, 0.0]  # class 0 on the same spot: kept
    det = Detector.from_config(DetectorConfig(model=tiny_model(
        tmp_path / "v5.onnx", {"output0": v5}, input_shape=(1, 3, 416, 416))))
    assert det.format == "ultralytics" and det.labels == ["class_0", "class_1"]
    found = det.detect(np.zeros((832, 832, 3), np.uint8))  # scale 0.5, no padding
    assert [(d.class_id, round(d.score, 2)) for d in found] == [(0, 0.81), (1, 0.72)]
    assert found[1].box == pytest.approx((160, 120, 240, 280))

    v8 = np.zeros((1, 6, 3549), np.float32)
    v8[0, :, 7] = [100, 100, 40, 80, 0.2, 0.9]
    det = Detector.from_config(DetectorConfig(model=tiny_model(
        tmp_path / "v8.onnx", {"output0": v8}, input_shape=(1, 3, 416, 416))))
    assert det.format == "ultralytics"
    found = det.detect(np.zeros((832, 832, 3), np.uint8))
    assert [(d.class_id, d.box) for d in found] == [(1, pytest.approx((160, 120, 240, 280)))]


def test_an_ultralytics_pose_model_is_refused(tmp_path):
    meta = {"names": "{0: 'person'}", "stride": "32", "imgsz": "[320, 320]", "task": "pose"}
    path = tiny_model(tmp_path / "pose.onnx", {"output0": np.zeros((1, 56, 2100), np.float32)},
                      metadata=meta)
    with pytest.raises(ModelError, match="unknown output layout"):
        Detector.from_config(DetectorConfig(model=path))
    with pytest.raises(ModelError, match="task 'pose' is not object detection"):
        Detector.from_config(DetectorConfig(model=path, format="ultralytics"))


# -- labels and the class filter -------------------------------------------------------
def test_labels_from_metadata_are_parsed_never_evaluated():
    assert labels_mod.from_metadata("{0: 'Normal', 1: 'Fall'}") == ["Normal", "Fall"]
    assert labels_mod.from_metadata("{0: 'a', 2: 'c'}") == ["a", "class_1", "c"]
    assert labels_mod.from_metadata("['x', 'y']") == ["x", "y"]
    assert labels_mod.from_metadata("__import__('os').system('false')") is None
    assert labels_mod.from_metadata("{'a': 1}") is None


def test_labels_file_overrides_and_must_match_the_class_count(yolox_path, frames, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"thing{i}\n" for i in range(80)) + "\n")
    det = Detector.from_config(DetectorConfig(model=yolox_path, labels=names))
    assert det.labels[0] == "thing0" and len(det.labels) == 80
    assert {d.label for d in det.detect(frames[0])} >= {"thing0"}
    short = tmp_path / "short.txt"
    short.write_text("person\ncar\n")
    with pytest.raises(ModelError, match="labels file has 2 names but the model") as err:
        Detector.from_config(DetectorConfig(model=yolox_path, labels=short))
    assert err.value.path == short
    with pytest.raises(ModelError, match="labels file not found"):
        Detector.from_config(DetectorConfig(model=yolox_path, labels=tmp_path / "none.txt"))
    blank = tmp_path / "blank.txt"
    blank.write_text("a\n\nb\n")
    with pytest.raises(ModelError, match="line 2 is blank"):
        Detector.from_config(DetectorConfig(model=yolox_path, labels=blank))


def test_class_filter_keeps_only_named_labels(yolox_path, frames):
    det = Detector.from_config(DetectorConfig(model=yolox_path, score=0.3,
                                              classes=["car", "truck"]))
    found = det.detect(frames[0])
    assert found and {d.label for d in found} <= {"car", "truck"}
    with pytest.raises(ModelError, match="'persn' not among the model's labels"):
        Detector.from_config(DetectorConfig(model=yolox_path, classes=["persn"]))


# -- letterbox and NMS -----------------------------------------------------------------
@pytest.mark.parametrize("centre", [False, True])
@pytest.mark.parametrize(("src", "inp"), [((768, 576), (416, 416)), ((576, 768), (640, 640)),
                                          ((1920, 1080), (640, 384)), ((101, 37), (416, 416)),
                                          ((416, 416), (416, 416))])
def test_letterbox_round_trip(src, inp, centre):
    lb = fit(*src, *inp, centre=centre)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, (50, 4)).astype(np.float32) * np.array([*src, *src], np.float32)
    back = lb.to_source(lb.to_input(xy), clip=False)
    assert np.allclose(back, xy, atol=1e-3)
    # the image's corners in input pixels map to the image's corners exactly
    new_w, new_h = round(src[0] * lb.scale_x), round(src[1] * lb.scale_y)
    corners = np.array([[lb.pad_x, lb.pad_y, lb.pad_x + new_w, lb.pad_y + new_h]], np.float32)
    assert lb.to_source(corners) == pytest.approx(np.array([[0, 0, *src]]), abs=1e-4)
    assert lb.pad_x >= 0 and lb.pad_x + new_w <= inp[0]
    assert lb.pad_y >= 0 and lb.pad_y + new_h <= inp[1]
    if not centre:
        assert (lb.pad_x, lb.pad_y) == (0, 0)


def test_letterbox_matches_the_reference_implementations():
    assert fit(768, 576, 416, 416, centre=False).scale_x == pytest.approx(416 / 768)
    lb = fit(768, 576, 640, 640, centre=True)  # Ultralytics LetterBox: 640x480 at y=80
    assert (lb.pad_x, lb.pad_y, lb.scale_x, lb.scale_y) == (0, 80, 640 / 768, 480 / 576)


def test_nms_is_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]],
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    same = nms(boxes, scores, np.array([0, 0, 0, 0], np.intp), 0.5)
    assert same.tolist() == [0, 3]  # the overlapping same-class boxes are suppressed
    mixed = nms(boxes, scores, np.array([0, 0, 1, 0], np.intp), 0.5)
    assert mixed.tolist() == [0, 2, 3]  # a different class on the same spot survives
    order = nms(boxes[::-1].copy(), scores[::-1].copy(), np.zeros(4, np.intp), 0.5)
    assert order.tolist() == [3, 0]  # best score first, whatever the input order
    assert nms(boxes[:0], scores[:0], np.zeros(0, np.intp), 0.5).size == 0
    assert iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 100)
