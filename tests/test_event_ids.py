"""Event ids never repeat for a node id: a wiped state directory or a reinstall starts the
boot counter at 1 again, under a new instance id, so a back end that de-duplicates by
event_id never drops the new node's events as old ones."""

from __future__ import annotations

import shutil

import pytest

from edge_agent.uplink.boot import instance
from tests.mqtt_helpers import validate
from tests.test_event_path_faults import agent_for, play, spooled


def ids_of_a_run(tmp_path, yolox_path, vtest_path) -> list[dict]:
    agent = agent_for(tmp_path, yolox_path, vtest_path, snapshot={"mode": "off"})
    try:
        play(agent, vtest_path, frames=40)
        rows = [r for r in agent.spool.after(0, 1000) if r.kind == "event"]
        docs = [validate(r.topic, r.payload) for r in rows]
        assert docs == spooled(agent)
    finally:
        agent.spool.close()
    return docs


def test_a_wiped_state_directory_never_reuses_an_event_id(tmp_path, yolox_path, vtest_path):
    first = ids_of_a_run(tmp_path, yolox_path, vtest_path)
    made = (tmp_path / "state" / "instance").read_text().strip()
    shutil.rmtree(tmp_path / "state")  # a reinstall, or a new SD card
    second = ids_of_a_run(tmp_path, yolox_path, vtest_path)
    assert first and second
    assert {d["boot"] for d in first} == {d["boot"] for d in second} == {1}
    assert not {d["event_id"] for d in first} & {d["event_id"] for d in second}
    again = (tmp_path / "state" / "instance").read_text().strip()
    assert again != made
    assert all(d["event_id"].startswith(f"cam-plaza-{again}-1-") for d in second)


def test_the_instance_id_survives_restarts_and_a_bad_one_is_named(tmp_path):
    made = instance(tmp_path)
    assert instance(tmp_path) == made
    (tmp_path / "instance").write_text("not-hex\n")
    with pytest.raises(ValueError, match=r"instance id 'not-hex' is not 8 hex digits"):
        instance(tmp_path)
