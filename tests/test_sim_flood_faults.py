"""Flood faults as the board's hardware shows them, and the battery settings' own rules:
a cut float wire reads dry through its pull-ups, a chattering input is a fault of its own
kind, and an alarm sleep longer than the normal sleep is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.board import SimBoard, run_upy
from sim.inputs import FloodFeed
from sim.physics import FlashFlood
from sim.scenario import Scenario


def _feed(tmp: Path) -> tuple[SimBoard, FloodFeed]:
    b = SimBoard("flood", "f", "127.0.0.1", 1883, tmp / "f",
                 defaults={"flood": {"probe_offset_v": 0.1, "probe_cm_per_v": 20.0,
                                     "float_active_low": True}})
    b.flash.mkdir(parents=True)
    (b.dir / "ctl.gen").write_bytes(b"\0\0\0\0")
    return b, FloodFeed("f", b, [(FlashFlood(0.0, crest_cm=40, hold_s=600), 5.0)])


def _float_pin(b: SimBoard) -> object:
    ctl = json.loads((b.dir / "ctl.json").read_text())
    return ctl["pins"][str(b.board["pins"]["float"])]


def test_a_cut_float_wire_reads_steady_dry_and_chatter_is_noise(tmp_path: Path) -> None:
    b, feed = _feed(tmp_path)
    feed.update(100.0)  # 40 cm of water: the float is closed (low)
    assert _float_pin(b) == 0.0
    feed.fault("sensor_disconnected", "float", True, 100.0)
    assert _float_pin(b) == 1.0, "a cut wire must read high (dry) through the pull-ups"
    feed.fault("sensor_disconnected", "float", False, 110.0)
    assert _float_pin(b) == 0.0
    feed.fault("sensor_chatter", "float", True, 120.0)
    assert _float_pin(b) == "floating"


@pytest.mark.parametrize("node, sensor", [("gas-1", None), ("flood-1", "probe")])
def test_chatter_is_only_for_the_float_input(node: str, sensor: str | None) -> None:
    fault: dict[str, object] = {"type": "sensor_chatter", "node": node, "at_s": 1}
    if sensor:
        fault["sensor"] = sensor
    with pytest.raises(ValueError, match="sensor_chatter is a digital input"):
        Scenario.model_validate({
            "name": "c", "duration_s": 10, "faults": [fault],
            "nodes": [{"id": "gas-1", "kind": "gas"}, {"id": "flood-1", "kind": "flood"}]})


def test_an_alarm_sleep_longer_than_the_normal_sleep_is_refused(tmp_path: Path) -> None:
    out = run_upy(
        "import config, spec_flood as s\n"
        "cfg = {'flood': config.defaults(s.SPEC)}\n"
        "for ch in ({'sleep_s': 300, 'alarm_sleep_s': 600}, {'alarm_sleep_s': 30},\n"
        "           {'awake_max_s': 0}):\n"
        "    new, err = config.merge(cfg, 'flood', s.SPEC, {'flood': ch}, s.cross)\n"
        "    print(err)\n", tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("flood.alarm_sleep_s: must be at most sleep_s")
    assert lines[1] == "None"
    assert lines[2].startswith("flood.awake_max_s: must be in 1..")
