"""Region-based detection: where crops go, that they find the people the whole frame finds on
vtest.avi, and that a still scene costs the detector only its refresh runs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent import regions
from edge_agent.agent import Agent
from edge_agent.capture.frame import Frame
from edge_agent.config import DetectorConfig, RegionsConfig, load_config
from edge_agent.detect.detector import Detector
from edge_agent.modeltools.agreement import agree
from edge_agent.regions import RegionPlanner
from edge_agent.track import Track
from sim.demo import CAMERA, camera_config

W, H = 768, 576
FPS = 10.0


def read(vtest: Path, first: int, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(vtest))
    cap.set(cv2.CAP_PROP_POS_FRAMES, first)
    out = []
    for _ in range(count):
        ok, img = cap.read()
        assert ok
        out.append(img)
    cap.release()
    return out


def track(box: tuple[float, float, float, float], seen: float = 0.0) -> Track:
    return Track(track_id=1, label="person", class_id=0, score=0.9, box=box,
                 first_seen=seen, last_seen=seen)


def planner(**cfg: object) -> RegionPlanner:
    p = RegionPlanner(RegionsConfig(enabled=True, **cfg), (416, 416))  # type: ignore[arg-type]
    assert p.plan(0.0, W, H, [], []).reason == "first"  # the first frame is always whole
    return p


# -- planning ----------------------------------------------------------------------------
def test_one_small_mover_gets_one_square_crop_around_it():
    plan = planner(min_size=256).plan(0.1, W, H, [(100, 100, 140, 200)], [])
    assert plan.reason == "regions" and plan.regions is not None and len(plan.regions) == 1
    x1, y1, x2, y2 = plan.regions[0]
    assert x2 - x1 == y2 - y1 == 256  # the model input is square: no letterbox waste
    assert x1 <= 100 - 10 and y1 <= 100 - 25 and x2 >= 140 + 10 and y2 >= 200 + 25  # margin


def test_crops_stay_inside_the_frame_by_moving_not_shrinking():
    plan = planner(min_size=256).plan(0.1, W, H, [(740, 540, 768, 576)], [])
    assert plan.regions == [(W - 256, H - 256, W, H)]


def test_far_apart_movers_merge_to_the_budget_or_fall_back_to_the_whole_frame():
    movers = [(20, 20, 60, 100), (700, 480, 740, 560)]
    two = planner(max_regions=2).plan(0.1, W, H, movers, [])
    assert two.regions is not None and len(two.regions) == 2
    one = planner(max_regions=1).plan(0.1, W, H, movers, [])
    assert one.regions is None and one.reason == "no_gain"  # one crop would be the frame


def test_more_boxes_than_the_planner_merges_go_to_the_whole_frame(monkeypatch):
    merged: list[int] = []
    real = regions.merge_crops

    def counting(crops, *args, **kwargs):
        merged.append(len(crops))
        return real(crops, *args, **kwargs)

    monkeypatch.setattr(regions, "merge_crops", counting)
    p = planner(max_regions=3)
    specks = [(x, y, x + 4.0, y + 9.0) for x in range(0, 760, 40) for y in range(0, 560, 70)]
    assert len(specks) > regions.MAX_BOXES
    plan = p.plan(0.1, W, H, specks, [])
    assert plan.regions is None and plan.reason == "too_many"
    assert merged == [], "no merging of hundreds of boxes"
    p.plan(0.2, W, H, specks[:regions.MAX_BOXES], [])
    assert merged == [regions.MAX_BOXES]


def test_tracks_are_covered_where_their_velocity_takes_them():
    t = track((300, 200, 340, 300))
    t.history.extend([(0.0, 320, 300), (1.0, 360, 300)])  # 40 px/s to the right
    plan = planner(min_size=64, margin=0.0).plan(1.5, W, H, [], [t])
    assert plan.regions is not None
    x1, _, x2, _ = plan.regions[0]
    assert x1 <= 300 and x2 >= 340 + 40 * 1.5


def test_still_tracks_get_no_crop_they_are_rechecked_on_the_whole_frame():
    parked = track((650, 40, 720, 100))
    walker = track((100, 300, 130, 380))
    plan = planner(min_size=64).plan(0.1, W, H, [(95, 295, 135, 385)], [parked, walker])
    assert plan.regions is not None and len(plan.regions) == 1
    assert plan.regions[0][2] < 400  # around the walker only, not stretched to the car


def test_whole_frame_when_nothing_moves_and_on_refresh():
    p = planner(full_frame_s=2.0)
    assert p.plan(0.5, W, H, [], []).reason == "nothing_moves"
    assert p.plan(1.0, W, H, [(10, 10, 50, 90)], []).reason == "regions"
    assert p.plan(2.6, W, H, [(10, 10, 50, 90)], []).reason == "refresh"


def test_disabled_planner_always_asks_for_the_whole_frame():
    p = RegionPlanner(RegionsConfig(enabled=False), (416, 416))
    assert p.plan(0.0, W, H, [(1, 1, 5, 5)], []).regions is None


# -- the cost of a crop: fixed-size against dynamic-size models ---------------------------
def dynamic_planner(**cfg: object) -> RegionPlanner:
    p = RegionPlanner(RegionsConfig(enabled=True, **cfg), (416, 416),  # type: ignore[arg-type]
                      dynamic=True)
    assert p.plan(0.0, W, H, [], []).reason == "first"
    return p


def test_a_crop_costs_one_inference_on_a_fixed_model_and_its_input_area_on_a_dynamic_one():
    assert planner().cost((0, 0, 300, 300)) == 1.0
    p = dynamic_planner()
    assert p.cost((0, 0, 300, 300)) == pytest.approx((320 / 416) ** 2)  # runs at 320x320
    assert p.cost((0, 0, 600, 600)) == 1.0  # shrunk to the nominal input, as a whole frame


def test_overlapping_crops_merge_on_a_dynamic_model_only_when_that_is_cheaper():
    movers = [(40, 40, 100, 140), (110, 120, 170, 220)]  # their 128 px crops overlap
    fixed = planner(min_size=64, margin=0.0, max_regions=2).plan(0.1, W, H, movers, [])
    assert fixed.regions is not None and len(fixed.regions) == 1  # one inference, not two
    dyn = dynamic_planner(min_size=64, margin=0.0, max_regions=2).plan(0.1, W, H, movers, [])
    assert dyn.regions is not None and len(dyn.regions) == 2  # 2 x 128^2 < one 192^2 crop
    assert dynamic_planner(min_size=64, margin=0.0, max_regions=1).plan(
        0.1, W, H, movers, []).regions == fixed.regions  # the budget still holds


def test_a_crop_near_the_frame_size_is_no_gain_on_a_dynamic_model_too():
    """A crop the size of the frame runs at 416x320, cheaper than the whole frame's 416x416
    only by the padding it drops: that is no reason to cut the frame."""
    far_apart = [(20, 20, 60, 100), (700, 480, 740, 560)]
    for p in (planner(), dynamic_planner()):
        assert p.plan(0.1, W, H, far_apart, []).reason == "no_gain"
        assert p.plan(0.2, 320, 240, [(100, 50, 160, 200)], []).reason == "no_gain"


def test_on_a_dynamic_model_crops_dearer_than_the_whole_frame_give_way_to_it():
    """A 768x576 frame runs at 416x320; a 448 px crop would run at 416x416 and cost more."""
    mover = [(300, 100, 420, 330)]  # 448 px square crop with its margin: dearer
    assert dynamic_planner(min_size=448, margin=0.0).plan(0.1, W, H, mover, []).reason \
        == "costlier"
    small = dynamic_planner(min_size=256, margin=0.0).plan(0.1, W, H, mover, [])
    assert small.reason == "regions"  # 256x256 < 416x320: cheaper, and sharper
    assert planner(min_size=448, margin=0.0).plan(0.1, W, H, mover, []).reason == "regions"


# -- on real frames ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def yolox(yolox_path):
    return Detector.from_config(DetectorConfig(model=yolox_path, score=0.3, threads=2,
                                               classes=["person"]))


@pytest.mark.parametrize("index", [120, 300, 520])
def test_regions_find_the_people_the_whole_frame_finds(yolox, vtest_path, index):
    """For each person of the previous frame, a crop placed where the tracker would have
    them finds, in this frame, every person the whole frame finds inside that crop (boxes
    matched one to one at IoU 0.5): the crop sees them bigger and loses nobody.

    People the whole frame is sure of (score >= 0.6): a blue signpost at the left scores 0.55
    as a person in the whole frame and, seen bigger in a crop, rightly no longer does."""
    before, now = read(vtest_path, index - 1, 2)
    people = [d for d in yolox.detect(before) if d.score >= 0.6]
    whole = [d for d in yolox.detect(now) if d.score >= 0.6]
    assert len(people) >= 3 and len(whole) >= 3
    checked = 0
    for person in people:
        plan = planner().plan(0.1, W, H, [person.box], [track(person.box)])  # walking
        assert plan.regions is not None and len(plan.regions) == 1, plan
        r = plan.regions[0]
        m = 16  # someone this close to a crop edge may be cut by it; the margin is for that
        inside = [d for d in whole if r[0] + m < d.box[0] and r[1] + m < d.box[1]
                  and d.box[2] < r[2] - m and d.box[3] < r[3] - m]
        found = yolox.detect_regions(now, plan.regions)
        a = agree(inside, found)
        assert a.only_reference == 0, (person, r, inside, found)
        checked += len(inside)
    assert checked >= len(people)


def test_boxes_cut_by_a_crop_edge_are_dropped(yolox, vtest_path):
    frame = read(vtest_path, 300, 1)[0]
    whole = [d for d in yolox.detect(frame) if d.score >= 0.5]
    d = max(whole, key=lambda d: d.box[3] - d.box[1])
    x1, y1, x2, y2 = (int(v) for v in d.box)
    mid = (y1 + y2) // 2
    cut = (max(0, x1 - 40), max(0, y1 - 40), min(W, x2 + 40), mid)  # the person's upper half
    found = yolox.detect_regions(frame, [cut])
    assert all(f.box[3] < mid - 2 for f in found), found


# -- in the pipeline ---------------------------------------------------------------------
def agent_for(tmp: Path, model: Path, clip: Path, **sections: dict[str, object]) -> Agent:
    path = camera_config(CAMERA, tmp / "node.toml", clip=clip, model=model, port=1,
                         state_dir=tmp / "state", detector={"threads": 1},
                         snapshot={"mode": "off"}, **sections)
    return Agent(load_config(path))


@pytest.mark.parametrize("regions", [False, True])
def test_a_still_scene_runs_the_detector_only_on_refresh(tmp_path, yolox_path, vtest_path,
                                                         regions):
    agent = agent_for(tmp_path, yolox_path, vtest_path, motion={"refresh_s": 2.0},
                      tracker={"max_age_s": 6.0},
                      regions={"enabled": regions})
    still = read(vtest_path, 300, 1)[0]
    try:
        for i in range(60):  # six seconds of a camera looking at a frozen scene
            agent.process(Frame(still, i, 1.7e9 + i / FPS, i / FPS))
    finally:
        agent.spool.close()
    assert agent.stats.frames == 60
    assert agent.stats.detector_runs == 3  # t = 0 (first frame), 2 s and 4 s
    assert agent.stats.inferences == 3
