"""End to end: `edge-agent run` on vtest.avi with the plaza zone config against a real broker."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from sim.demo import CAMERA, camera_config
from sim.sent import from_agent_log
from tests.mqtt_helpers import Recorder, validate


def run_agent(cfg: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg),
                           "--log-level", "INFO"], capture_output=True, text=True,
                          timeout=timeout)


def test_agent_reports_intrusion_and_crowding_on_vtest(broker, tmp_path, yolox_path,
                                                       vtest_path):
    cfg = camera_config(CAMERA, tmp_path / "node.toml", clip=vtest_path, model=yolox_path,
                        port=broker.port, state_dir=tmp_path / "state",
                        camera={"speed": 4.0})
    rec = Recorder(broker.host, broker.port, "safecity/#")
    proc = run_agent(cfg)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    msgs = rec.wait_for(lambda m: any(x.topic.endswith("/status") and
                                      x.json()["state"] == "offline" for x in m), timeout=20)
    rec.close()

    docs = []
    for m in msgs:
        doc = validate(m.topic, m.payload)  # every JSON message the agent sent is schema-valid
        if "/event/" in m.topic:
            docs.append(doc)
    kinds = Counter((d["type"], d["phase"]) for d in docs)
    assert kinds[("intrusion", "start")] >= 3, kinds
    assert kinds[("crowding", "start")] >= 1, kinds

    # every start has exactly one end with the same event_id (the agent ended them at stop)
    starts = {d["event_id"] for d in docs if d["phase"] == "start"}
    ends = [d["event_id"] for d in docs if d["phase"] == "end"]
    assert sorted(ends) == sorted(starts)
    # ids unique per start/instant; seq strictly increasing within the one boot
    firsts = [d["event_id"] for d in docs if d["phase"] in ("start", "instant")]
    assert len(firsts) == len(set(firsts))
    assert {d["boot"] for d in docs} == {1}
    seqs = [d["seq"] for d in docs]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    assert seqs == list(range(1, len(seqs) + 1)), "no gaps: every numbered event arrived"
    # the simulator reads from the log what the agent says it sent: exactly what arrived
    sent = from_agent_log("cam", proc.stdout, lambda ts: ts)
    assert [(s.type, s.phase, s.event_id) for s in sent] == \
        [(d["type"], d["phase"], d["event_id"]) for d in docs]
    assert all(s.t is not None for s in sent)

    # intrusions happen where the zone is, on people
    for d in docs:
        if d["type"] == "intrusion" and d["phase"] == "start":
            assert d["details"]["label"] == "person" and d["details"]["zone"] == "walkway"
    # snapshots were published for starts and are JPEGs
    snaps = [m for m in msgs if "/snapshot/" in m.topic]
    assert snaps and all(m.payload[:2] == b"\xff\xd8" for m in snaps)
    referenced = {d["snapshot"]["topic"] for d in docs if "snapshot" in d}
    assert referenced <= {m.topic for m in snaps}

    # a second run bumps the boot counter
    proc = run_agent(cfg)
    assert proc.returncode == 0
    assert (tmp_path / "state" / "boot").read_text().strip() == "2"
