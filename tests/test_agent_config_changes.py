"""Remote configuration changes cannot break a node: a change is built (models loaded,
labels checked, rules constructed) before it is stored or acked; stored changes that no
longer build are set aside at start; a live change rebuilds only what it touched; commands
sent while the node is offline arrive."""

from __future__ import annotations

import json
import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent import remote_config
from edge_agent.agent import Agent
from edge_agent.changes import SECTIONS
from edge_agent.commands import Commands, handlers
from edge_agent.config import load_config, parse_config
from sim.broker import free_port
from tests.agent_helpers import AgentProcess, node_config, short_clip
from tests.mqtt_helpers import validate, validator
from tests.test_agent_commands import BASE, Operator


def _events(op: Operator) -> list[dict]:
    return [x.json() for x in op.rec.matching("/event/")]


def test_changes_that_cannot_run_are_refused_and_live_changes_keep_untouched_rules(
        broker, tmp_path, yolox_path, vtest_path):
    clip = short_clip(vtest_path, tmp_path / "walkway.avi")
    cfg = node_config(tmp_path, clip=clip, model=yolox_path, port=broker.port,
                      camera={"loop": True})
    overrides = tmp_path / "state" / "remote-config.toml"
    op = Operator(broker)
    events = op.rec
    events.client.subscribe(f"{BASE}/event/+", qos=1)
    agent = AgentProcess(cfg, tmp_path / "agent.log")
    try:
        agent.wait_log("event=mqtt_connected", timeout=90)
        agent.wait_log("event=first_frame", timeout=90)
        conf = op.send({"id": "g1", "cmd": "get_config"}, "g1")["result"]
        rules = conf["rules"]

        refused = {
            "fall-model": ({"rules": rules + [{"type": "fall", "model": "gone.onnx"}]},
                           r"rules\[5\]\.model: .*gone\.onnx"),
            "classes": ({"detector": {"classes": ["person", "unicorn"]}},
                        r"detector\.model: .*'unicorn'"),
            "labels": ({"rules": [dict(rules[0], labels=["unicorn"])] + rules[1:]},
                       r"rules\[0\]\.labels: 'unicorn' is not a class the detector emits"),
        }
        for name, (change, message) in refused.items():
            ack = op.send({"id": f"x-{name}", "cmd": "set_config",
                           "args": {"config": change}}, f"x-{name}")
            assert not ack["ok"] and ack["error"]["code"] == "rejected", ack
            assert re.search(message, ack["error"]["message"]), ack["error"]["message"]
        assert not overrides.exists(), "a refused change is never stored"
        assert op.send({"id": "g2", "cmd": "get_config"})["result"] == conf
        assert op.send({"id": "p1", "cmd": "ping"})["ok"]

        ack = op.send({"id": "gp", "cmd": "set_config",
                       "args": {"config": {"gpio": {"bounce_s": 0.1}}}}, "gp")
        assert ack["ok"] and ack["result"]["restart_required"] == ["gpio"], ack
        assert ack["result"]["applied"] == []

        # a live change: intrusion events open before it are not ended by it
        op.rec.wait_for(lambda m: any(e["type"] == "intrusion" and e["phase"] == "start"
                                      for e in _events(op)), 60)
        ack = op.send({"id": "q", "cmd": "set_config",
                       "args": {"config": {"snapshot": {"jpeg_quality": 60}}}}, "q")
        assert ack["ok"] and ack["result"]["applied"] == ["snapshot"], ack
        assert ack["result"]["changed"] == ["snapshot.jpeg_quality"]
        agent.wait_log(r"event=config_applied sections=snapshot rules_kept=5 rules_replaced=0")
        crowd = next(i for i, r in enumerate(rules) if r["type"] == "crowding")
        changed = [dict(r, max_count=1) if i == crowd else r for i, r in enumerate(rules)]
        ack = op.send({"id": "c", "cmd": "set_config",
                       "args": {"config": {"rules": changed}}}, "c")
        assert ack["ok"] and ack["result"]["changed"] == ["rules"], ack
        agent.wait_log(r"event=config_applied sections=rules rules_kept=4 rules_replaced=1")
        assert re.search(r"event=config_changed fields=snapshot.jpeg_quality", agent.log())
        status = op.rec.wait_for(lambda m: any(
            x.topic.endswith("/status") and x.json().get("remote_config", {}).get("changed")
            == ["rules"] for x in m), 10)
        assert status
        time.sleep(1.0)
        by_change = [e for e in _events(op) if e.get("reason") == "config_change"]
        assert all(e["type"] == "crowding" for e in by_change), by_change
        assert agent.terminate() == 0
        starts = {e["event_id"] for e in _events(op) if e["phase"] == "start"}
        ends = [e["event_id"] for e in _events(op) if e["phase"] == "end"]
        assert sorted(ends) == sorted(starts), "every start gets exactly one end"
        for m in op.rec.messages:
            validate(m.topic, m.payload)
    finally:
        if agent.proc.poll() is None:
            agent.kill()
        op.close()


def test_stored_changes_that_no_longer_build_are_set_aside_and_the_node_runs(
        broker, tmp_path, yolox_path, vtest_path):
    clip = short_clip(vtest_path, tmp_path / "walkway.avi")
    cfg = node_config(tmp_path, clip=clip, model=yolox_path, port=broker.port,
                      camera={"loop": True})
    overrides = tmp_path / "state" / "remote-config.toml"
    overrides.parent.mkdir(parents=True, exist_ok=True)
    overrides.write_text('[detector]\nclasses = ["person", "unicorn"]\n')
    op = Operator(broker)
    op.rec.client.subscribe(f"{BASE}/event/+", qos=1)
    agent = AgentProcess(cfg, tmp_path / "agent.log")
    try:
        log = agent.wait_log("event=remote_config_set_aside", 90)
        assert "remote-config.toml" in log and "unicorn" in log
        assert not overrides.exists()
        kept = list(overrides.parent.glob("remote-config.rejected-*.toml"))
        assert len(kept) == 1 and "unicorn" in kept[0].read_text()
        op.rec.wait_for(lambda m: any(
            x.topic.endswith("/status") and x.json().get("state") == "online"
            and x.json().get("remote_config", {}).get("state") == "set_aside" for x in m), 60)
        op.rec.wait_for(lambda m: any(e["type"] == "intrusion" for e in _events(op)), 60)
        assert agent.terminate() == 0
    finally:
        if agent.proc.poll() is None:
            agent.kill()
        op.close()


def test_commands_sent_while_the_node_is_offline_arrive(broker, tmp_path, yolox_path,
                                                        vtest_path):
    clip = short_clip(vtest_path, tmp_path / "walkway.avi")
    cfg = node_config(tmp_path, clip=clip, model=yolox_path, port=broker.port,
                      camera={"loop": True})
    op = Operator(broker)
    agent = AgentProcess(cfg, tmp_path / "agent.log")
    try:
        agent.wait_log("event=mqtt_connected", timeout=90)
        assert agent.terminate() == 0
        op.client.publish(f"{BASE}/cmd", json.dumps({"id": "while-away", "cmd": "ping"}),
                          qos=1).wait_for_publish(5)
        agent = AgentProcess(cfg, tmp_path / "agent2.log")
        msgs = op.rec.wait_for(lambda m: any(x.topic.endswith("/cmd/ack") and
                                             x.json()["id"] == "while-away" for x in m), 90)
        ack = next(x.json() for x in msgs if x.topic.endswith("/cmd/ack"))
        assert ack["ok"] and ack["result"] == {"pong": True}
        assert agent.terminate() == 0
    finally:
        if agent.proc.poll() is None:
            agent.kill()
        op.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 100) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=3),
    max_leaves=8)


def test_fuzzed_commands_to_the_real_handlers_get_one_valid_ack_and_break_nothing(
        tmp_path, yolox_path, vtest_path):
    clip = short_clip(vtest_path, tmp_path / "walkway.avi")
    path = node_config(tmp_path, clip=clip, model=yolox_path, port=free_port())
    agent = Agent(load_config(path), path)
    commands = Commands(agent.ident, handlers(agent))
    overrides = remote_config.overrides_path(agent.config)
    ack_schema = validator("ack")
    names = st.sampled_from(["person", "car", "bus", "unicorn"])
    rule = st.one_of(
        st.fixed_dictionaries({"type": st.just("intrusion"),
                               "zone": st.sampled_from(["walkway", "nowhere"]),
                               "labels": st.lists(names, min_size=1, max_size=2)}),
        st.fixed_dictionaries({"type": st.just("fall")}, optional={"model": st.just("gone.onnx")}),
        st.fixed_dictionaries({"type": st.just("crowding"), "zone": st.just("walkway"),
                               "label": names}))
    plausible = {
        "snapshot": st.fixed_dictionaries({}, optional={
            "jpeg_quality": st.integers(-1, 120),
            "mode": st.sampled_from(["off", "publish", "reference", "bogus"])}),
        "motion": st.fixed_dictionaries({}, optional={"refresh_s": st.floats(-1, 10)}),
        "tracker": st.fixed_dictionaries({}, optional={"max_age_s": st.floats(-1, 10)}),
        "detector": st.fixed_dictionaries({}, optional={
            "classes": st.lists(names, max_size=3), "score": st.floats(-0.5, 1.5)}),
        "gpio": st.fixed_dictionaries({}, optional={"bounce_s": st.floats(-1, 6)}),
        "mqtt": st.fixed_dictionaries({}, optional={"password": st.sampled_from(["***", "x"])}),
        "rules": st.lists(rule, max_size=3),
    }
    changes = st.one_of(
        st.dictionaries(st.sampled_from(sorted(set(SECTIONS) | {"bogus"})), json_values,
                        max_size=2),
        st.fixed_dictionaries({}, optional=plausible))
    payloads = st.one_of(
        st.fixed_dictionaries({"id": st.text(min_size=1, max_size=8), "cmd": st.just(
            "set_config"), "args": st.fixed_dictionaries({"config": changes})}),
        st.fixed_dictionaries({"id": st.text(max_size=70) | st.none(),
                               "cmd": st.sampled_from(["get_config", "set_config", "snapshot",
                                                       "self_test", "ping", "nope"]),
                               "args": json_values}))

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(payloads)
    def one(doc: dict) -> None:
        before = overrides.read_bytes() if overrides.exists() else None
        ack = commands.handle(json.dumps(doc).encode())
        ack_schema.validate(ack)
        if isinstance(doc.get("id"), str) and 0 < len(doc["id"]) <= 64:
            assert ack["id"] == doc["id"], ack
        if not ack["ok"]:
            assert ack["error"]["code"] != "internal", ("a handler failed", doc, ack)
            after = overrides.read_bytes() if overrides.exists() else None
            assert after == before, "a refused change leaves the stored overrides alone"
        parse_config(agent.config.model_dump(mode="json", exclude_none=True))

    try:
        one()
    finally:
        agent.spool.close()
