"""`edge-agent detect` as a user runs it: a subprocess on a real model and a vtest frame;
bad models and images give one line on stderr and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.test_detect import read_frames, tiny_model

CLI = [sys.executable, "-m", "edge_agent.cli", "detect"]


def detect(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=60)


def one_line_error(r: subprocess.CompletedProcess[str], *parts: object) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # no traceback
    for part in parts:
        assert str(part) in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def frame_jpg(vtest_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("frames") / "vtest300.jpg"
    assert cv2.imwrite(str(path), read_frames(vtest_path, 300, 1)[0])
    return path


def test_json_output_lists_the_people(yolox_path, frame_jpg):
    r = detect("--model", yolox_path, "--image", frame_jpg, "--score", 0.3, "--threads", 1,
               "--json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    people = [d for d in found if d["label"] == "person"]
    assert len(people) >= 5
    for d in found:
        assert set(d) == {"label", "class_id", "score", "box"}
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576
        assert d["score"] >= 0.3


def test_table_output_and_format_override(fall_model_path, frame_jpg):
    r = detect("--model", fall_model_path, "--image", frame_jpg, "--format", "ultralytics")
    assert r.returncode == 0, r.stderr
    head, columns, *rows = r.stdout.splitlines()
    assert "format ultralytics, input 640x640, image 768x576" in head
    assert columns.split()[:3] == ["label", "id", "score"]
    assert sum(row.split()[0] == "Normal" for row in rows) >= 3


def test_missing_model(tmp_path, frame_jpg):
    missing = tmp_path / "nope.onnx"
    line = one_line_error(detect("--model", missing, "--image", frame_jpg), missing)
    assert line == f"{missing}: model file not found"


def test_corrupt_model(tmp_path, frame_jpg):
    bad = tmp_path / "random.onnx"
    bad.write_bytes(np.random.default_rng(7).bytes(10_000))
    line = one_line_error(detect("--model", bad, "--image", frame_jpg), bad)
    assert line == f"{bad}: not an ONNX model (protobuf parse failed)"


def test_unknown_layout(tmp_path, frame_jpg):
    odd = tiny_model(tmp_path / "odd.onnx", {"logits": np.zeros((1, 10), np.float32)})
    one_line_error(detect("--model", odd, "--image", frame_jpg), odd, "unknown output layout",
                   "[1,10]")


def test_unreadable_images(yolox_path, tmp_path):
    missing = tmp_path / "none.jpg"
    assert one_line_error(detect("--model", yolox_path, "--image", missing),
                          missing) == f"{missing}: not found"
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 this is no jpeg")
    one_line_error(detect("--model", yolox_path, "--image", garbage), garbage,
                   "cannot decode it as an image")


def test_bad_option_value(yolox_path, frame_jpg):
    one_line_error(detect("--model", yolox_path, "--image", frame_jpg, "--score", 2), "score")


def test_help_does_not_load_onnxruntime():
    code = ("import sys, contextlib, io\n"
            "from edge_agent import cli\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    cli.main(['detect', '--help'])\n"
            "print('onnxruntime' in sys.modules, 'cv2' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]
