"""Scenario commands and reset faults: validated up front with the field named, and judged
from the acks that really arrived."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from sim.expect import Arrival, check_command
from sim.scenario import Command, ScenarioError, load_scenario


def _load(tmp_path: Path, **extra: object) -> list[str]:
    doc: dict[str, object] = {"name": "t", "duration_s": 100,
                              "nodes": [{"id": "g", "kind": "gas"},
                                        {"id": "c", "kind": "camera", "config": "x.toml"}]}
    doc.update(extra)
    p = tmp_path / "s.toml"
    p.write_text(tomli_w.dumps(doc))
    try:
        load_scenario(p)
    except ScenarioError as e:
        return e.errors
    return []


def test_bad_commands_and_resets_are_named(tmp_path: Path) -> None:
    errors = "\n".join(_load(tmp_path, commands=[
        {"node": "nope", "at_s": 1, "cmd": "ping"},
        {"node": "g", "at_s": 200, "cmd": "ping"},
        {"node": "g", "at_s": 1, "cmd": "ping", "code": "rejected"}],
        faults=[{"type": "reset", "node": "c", "at_s": 5}]))
    assert "commands[0].node: no node named 'nope'" in errors
    assert "commands[1].at_s: after the end" in errors
    assert "commands[2].code: only with ok = false" in errors
    assert "faults[0].node: reset needs a sensor board" in errors
    bad_cause = "\n".join(_load(tmp_path, faults=[{"type": "reset", "node": "g", "at_s": 5,
                                                    "cause": "soft"}]))
    assert "faults[0].cause" in bad_cause


def _ack(t: float, cid: str, ok: bool, code: str | None = None) -> Arrival:
    doc = {"id": cid, "cmd": "calibrate", "ok": ok}
    if code:
        doc["error"] = {"code": code, "message": "m"}
    return Arrival(t, "safecity/v1/s/g/cmd/ack", "g", "ack", doc, 10)


@pytest.mark.parametrize(("acks", "held"), [
    ([_ack(12.0, "x", False, "rejected")], True),
    ([_ack(12.0, "x", True)], False),            # accepted where it must be refused
    ([_ack(12.0, "x", False, "busy")], False),   # refused for another reason
    ([_ack(16.0, "x", False, "rejected")], False),  # too late
    ([_ack(12.0, "y", False, "rejected")], False),  # another command's ack
    ([], False),
])
def test_a_command_verdict_holds_only_for_the_right_ack_in_time(
        acks: list[Arrival], held: bool) -> None:
    c = Command(at_s=10, node="g", cmd="calibrate", id="x", ok=False, code="rejected",
                within_s=5)
    assert check_command(0, c, acks, ["g"]).ok is held
