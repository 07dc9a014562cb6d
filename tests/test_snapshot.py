"""Snapshots: people blurred and privacy zones black before anything leaves, within max_bytes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.capture.frame import Frame, Image
from edge_agent.config import SnapshotConfig
from edge_agent.geometry import Box
from edge_agent.snapshot import render_snapshot
from edge_agent.track import Track


@pytest.fixture(scope="module")
def image(vtest_path: Path) -> Image:
    cap = cv2.VideoCapture(str(vtest_path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 300)
    ok, img = cap.read()
    cap.release()
    assert ok
    frame_image = np.asarray(img, np.uint8)
    frame_image.setflags(write=False)  # as the capture room hands it out: shared, read-only
    return frame_image


Floats = npt.NDArray[np.float32]
PERSON_BOX: Box = (300.0, 200.0, 360.0, 340.0)


def person(box: Box = PERSON_BOX, label: str = "person") -> Track:
    return Track(track_id=1, label=label, class_id=0, score=0.9, box=box, first_seen=0.0,
                 last_seen=0.0, confirmed=True)


def decode(jpeg: bytes) -> Image:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return np.asarray(img, np.uint8)


def region(img: Image, box: Box) -> Floats:
    x1, y1, x2, y2 = (int(v) for v in box)
    return img[y1:y2, x1:x2].astype(np.float32)


def detail(img: Floats) -> float:
    """Variance of the Laplacian: fine detail such as a face."""
    gray = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def test_people_are_blurred_and_the_frame_is_untouched(image: Image) -> None:
    before = image.copy()
    jpeg = render_snapshot(Frame(image, 300, 1.7e9, 30.0), [], [person()],
                           SnapshotConfig(jpeg_quality=95))
    assert np.array_equal(image, before)
    assert jpeg[:2] == b"\xff\xd8"
    out = decode(jpeg)
    assert out.shape == image.shape
    inside, original = region(out, PERSON_BOX), region(image, PERSON_BOX)
    assert np.abs(inside - original).mean() > 10  # strongly changed...
    assert inside.std() < 0.5 * original.std()  # ...and flat: no face, no detail
    assert detail(inside) < 0.01 * detail(original)
    outside: Box = (500.0, 400.0, 700.0, 550.0)  # the rest of the picture is still there
    assert np.abs(region(out, outside) - region(image, outside)).mean() < 4


def test_other_labels_and_disabled_redaction_keep_the_pixels(image: Image) -> None:
    frame = Frame(image, 300, 1.7e9, 30.0)
    for tracks, cfg in (([person(label="car")], SnapshotConfig(jpeg_quality=95)),
                        ([person()], SnapshotConfig(jpeg_quality=95, redact_people=False))):
        out = decode(render_snapshot(frame, [], tracks, cfg))
        assert np.abs(region(out, PERSON_BOX) - region(image, PERSON_BOX)).mean() < 4


def test_privacy_zones_are_black(image: Image) -> None:
    zone = [(300.0, 0.0), (580.0, 0.0), (580.0, 100.0), (300.0, 100.0)]
    out = decode(render_snapshot(Frame(image, 300, 1.7e9, 30.0), [], [],
                                 SnapshotConfig(privacy_zones=[zone], jpeg_quality=95)))
    assert region(out, (305.0, 5.0, 575.0, 95.0)).max() < 12  # JPEG ringing at most
    assert region(image, (305.0, 5.0, 575.0, 95.0)).mean() > 50


def test_event_boxes_are_drawn(image: Image) -> None:
    box: Box = (100.0, 300.0, 200.0, 450.0)
    out = decode(render_snapshot(Frame(image, 300, 1.7e9, 30.0), [box], [],
                                 SnapshotConfig(jpeg_quality=95, redact_people=False)))
    edge = out[300:450, 99:102].astype(np.int32)  # the left side of the rectangle
    b, g, r = edge[..., 0].mean(), edge[..., 1].mean(), edge[..., 2].mean()
    assert r > 150 and g < 80 and b < 80


def test_fits_max_bytes_and_max_width(image: Image) -> None:
    frame = Frame(image, 300, 1.7e9, 30.0)
    big = render_snapshot(frame, [], [person()], SnapshotConfig(jpeg_quality=95))
    small = render_snapshot(frame, [], [person()],
                            SnapshotConfig(jpeg_quality=95, max_bytes=12_000))
    assert len(small) <= 12_000 < len(big)
    narrow = decode(render_snapshot(frame, [], [person()], SnapshotConfig(max_width=320)))
    assert narrow.shape[:2] == (240, 320)


def test_a_tiny_max_bytes_is_an_error(image: Image) -> None:
    with pytest.raises(ValueError, match="does not fit in 1000 bytes"):
        render_snapshot(Frame(image, 300, 1.7e9, 30.0), [], [person()],
                        SnapshotConfig(max_bytes=1_000))


def test_a_coasting_person_is_blurred_where_they_walked_to(image: Image) -> None:
    """The detector skipped this frame: the person's last box is 0.5 s old."""
    walker = person((300.0, 200.0, 360.0, 340.0))
    for i in range(6):  # walking right at 100 px/s
        walker.history.append((29.0 + i / 10, 330.0 + 10 * i, 340.0))
    walker.last_seen = 29.5
    out = decode(render_snapshot(Frame(image, 300, 1.7e9, 30.0), [], [walker],
                                 SnapshotConfig(jpeg_quality=95)))
    now_at: Box = (350.0, 200.0, 410.0, 340.0)
    assert detail(region(out, now_at)) < 0.01 * detail(region(image, now_at))
