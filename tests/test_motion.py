"""Motion gating on vtest.avi: people walking trigger the detector, a still scene does not."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.capture.frame import Frame, Image
from edge_agent.config import MotionConfig
from edge_agent.motion import MAX_BOXES, MotionGate

FPS = 10.0


@pytest.fixture(scope="module")
def clip(vtest_path: Path) -> list[Image]:
    cap = cv2.VideoCapture(str(vtest_path))
    frames: list[Image] = []
    while len(frames) < 200:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(np.asarray(img, np.uint8))
    cap.release()
    assert len(frames) == 200
    return frames


def frame(img: Image, i: int, t0: float = 0.0) -> Frame:
    return Frame(img, i, 1.7e9 + i / FPS, t0 + i / FPS)


def test_people_walking_are_motion(clip: list[Image]) -> None:
    gate = MotionGate(MotionConfig())
    results = [gate.should_detect(frame(img, i)) for i, img in enumerate(clip)]
    assert results[0] == (True, [])  # the first frame always runs
    assert all(run for run, _ in results)  # someone is always walking in vtest
    assert gate.fraction > MotionConfig().min_area
    for _, boxes in results[1:]:
        assert boxes
        for x1, y1, x2, y2 in boxes:  # full-frame pixels, not the 160-px working frame
            assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576
    assert max(max(b[2] for b in boxes) for _, boxes in results[1:]) > 400


def test_motion_boxes_are_where_something_moved() -> None:
    gate = MotionGate(MotionConfig())
    bg = np.full((576, 768, 3), 90, np.uint8)
    for i in range(5):
        gate.should_detect(frame(bg, i))
    moved = bg.copy()
    moved[300:460, 500:560] = 220  # a bright figure appears
    run, boxes = gate.should_detect(frame(moved, 5))
    assert run
    [(x1, y1, x2, y2)] = boxes
    assert x1 <= 500 <= 560 <= x2 and y1 <= 300 <= 460 <= y2
    assert x2 - x1 < 120 and y2 - y1 < 220  # close around it, not the whole frame


def test_rain_is_one_box_around_it_not_hundreds_of_specks() -> None:
    gate = MotionGate(MotionConfig())
    rng = np.random.default_rng(3)
    bg = np.full((576, 768, 3), 90, np.uint8)
    for i in range(5):
        gate.should_detect(frame(bg, i))
    for i in range(5, 15):  # streaks of rain all over the frame
        wet = bg.copy()
        for x, y in zip(rng.integers(0, 760, 400), rng.integers(0, 540, 400), strict=True):
            wet[y:y + 30, x:x + 3] = 230
        run, boxes = gate.should_detect(frame(wet, i))
        assert run and len(boxes) <= MAX_BOXES
    [(x1, y1, x2, y2)] = boxes
    assert x2 - x1 > 600 and y2 - y1 > 400, "one box around the rain"


def test_a_still_scene_only_runs_on_refresh(clip: list[Image]) -> None:
    gate = MotionGate(MotionConfig(refresh_s=2.0))
    for i, img in enumerate(clip[:50]):
        gate.should_detect(frame(img, i))
    still = clip[50]
    runs = [i for i in range(50, 200) if gate.should_detect(frame(still, i))[0]]
    # the first frames still differ from the fading background of the walking scene...
    settle = [i for i in runs if i < 75]
    assert settle and settle == list(range(50, 50 + len(settle)))
    # ...then only the periodic refresh, every 2 s (20 frames)
    steady = [i for i in runs if i >= 75]
    assert steady and all(b - a == 20 for a, b in zip(steady, steady[1:], strict=False))
    assert gate.should_detect(frame(still, 200))[1] == []


def test_disabled_always_runs(clip: list[Image]) -> None:
    gate = MotionGate(MotionConfig(enabled=False))
    assert all(gate.should_detect(frame(clip[0], i)) == (True, []) for i in range(30))


def test_a_new_frame_shape_starts_over(clip: list[Image]) -> None:
    """A camera reconnecting at another resolution: the old background is meaningless."""
    gate = MotionGate(MotionConfig())
    gate.should_detect(frame(clip[0], 0))
    gate.should_detect(frame(clip[1], 1))
    assert gate.gray is not None and gate.gray.shape == (120, 160)
    wide = np.asarray(cv2.resize(clip[2], (640, 360)), np.uint8)
    assert gate.should_detect(frame(wide, 2)) == (True, [])
    assert gate.gray is not None and gate.gray.shape == (90, 160)
