"""The timeline shows each event at its own timestamp with its arrival marked, the board's
thresholds, the expectation windows and when each node was online: checked on the model it
is drawn from and on the drawn figure's items, not on pixels."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_rgb

from sim.expect import Arrival
from sim.scenario import Scenario
from sim.timeline import Mark, Span, Trace, Window, build, draw, thresholds

SCENARIO = Scenario.model_validate({
    "name": "timeline", "duration_s": 60, "site": "s",
    "nodes": [{"id": "gas-1", "kind": "gas", "settings": {"gas": {"alarm_ppm": 1500}}},
              {"id": "cam-1", "kind": "camera", "config": "cam.toml"}],
    "expect": [{"node": "gas-1", "event": "gas", "phase": "start", "after_s": 10,
                "within_s": 5}],
    "expect_none": [{"node": "gas-1", "event": "gas", "to_s": 9}]})
DEFAULTS = {"gas": {"alarm_ppm": 1000.0, "high_ppm": 5000.0, "warmup_s": 60}}


def status(node: str, t: float, state: str) -> Arrival:
    return Arrival(t, f"safecity/v1/s/{node}/status", node, "status", {"state": state}, 10)


def event(node: str, eid: str, etype: str, phase: str, sent: float, arrived: float,
          historical: bool = False) -> Arrival:
    doc: dict[str, Any] = {"event_id": eid, "type": etype, "phase": phase, "boot": 1,
                           "seq": 1, "historical": historical}
    return Arrival(arrived, f"safecity/v1/s/{node}/event/{etype}", node, "event", doc, 10,
                   sent_t=sent)


ARRIVALS = [status("gas-1", 0.0, "online"), status("cam-1", 1.0, "online"),
            event("cam-1", "cam-1-a-1-1", "intrusion", "start", 5.0, 5.1),
            event("cam-1", "cam-1-a-1-1", "intrusion", "end", 8.0, 8.2),
            event("gas-1", "gas-1-1-1", "gas", "start", 12.0, 12.4),
            status("gas-1", 30.0, "offline"),
            event("gas-1", "gas-1-1-1", "gas", "end", 35.0, 40.5, historical=True),
            status("gas-1", 40.0, "online"), status("gas-1", 50.0, "sleeping")]
TRACES = {"gas-1": Trace("gas", "ppm", [0.0, 12.0, 35.0, 60.0], [0.0, 3000.0, 0.0, 0.0])}
FAULTS = [(30.0, 40.0, "wifi_down gas-1")]


def test_the_model_holds_events_thresholds_windows_and_presence() -> None:
    tl = build(SCENARIO, ARRIVALS, TRACES, FAULTS, DEFAULTS)
    gas, cam = tl.lanes
    assert (gas.node, cam.node) == ("gas-1", "cam-1")
    assert gas.thresholds == [("alarm", 1500.0), ("high", 5000.0)]  # the node's own setting
    assert cam.thresholds == [] and cam.trace is None
    assert gas.marks == [Mark("gas", "start", "gas-1-1-1", 12.0, 12.4, False),
                         Mark("gas", "end", "gas-1-1-1", 35.0, 40.5, True)]
    assert gas.windows == [Window("expect", 10.0, 15.0, "expect gas/start"),
                           Window("none", 0.0, 9.0, "no gas")]
    assert cam.windows == []
    assert gas.presence == [Span("online", 0.0, 30.0), Span("offline", 30.0, 40.0),
                            Span("online", 40.0, 50.0), Span("sleeping", 50.0, 60.0)]
    assert cam.presence == [Span("online", 1.0, 60.0)]
    assert tl.faults == FAULTS


def test_thresholds_are_the_board_s_settings_over_the_firmware_defaults() -> None:
    defaults = {"flood": {"level_alarm_cm": 10.0}, "vibration": {
        "peak_gate_g": 0.03, "critical_g": 0.08, "trigger": 4.0}}
    assert thresholds("flood", {}, defaults) == [("alarm", 10.0)]
    assert thresholds("vibration", {"vibration": {"critical_g": 0.2}}, defaults) == [
        ("gate", 0.03), ("critical", 0.2)]


def test_an_event_without_its_own_time_is_placed_at_its_arrival() -> None:
    a = Arrival(7.0, "safecity/v1/s/gas-1/event/gas", "gas-1", "event",
                {"event_id": "x", "type": "gas", "phase": "instant", "boot": 1, "seq": 1}, 5)
    (mark,) = build(SCENARIO, [a], TRACES, [], DEFAULTS).lanes[0].marks
    assert mark.sent_t is None and mark.t == 7.0


def drawn(fig: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for artist in fig.findobj(lambda a: a.get_gid() is not None):
        out.setdefault(artist.get_gid(), []).append(artist)
    return out


def xspan(artist: Any) -> tuple[float, float]:
    """The x extent of a drawn line, marker or span (a Rectangle), in data units."""
    if hasattr(artist, "get_xdata"):
        xs = [float(x) for x in artist.get_xdata()]
    else:
        xs = [artist.get_x(), artist.get_x() + artist.get_width()]
    return min(xs), max(xs)


@pytest.fixture
def figure() -> Any:
    fig = draw(build(SCENARIO, ARRIVALS, TRACES, FAULTS, DEFAULTS))
    yield fig
    plt.close(fig)


def test_the_figure_draws_each_event_at_its_time_and_its_arrival(figure: Any) -> None:
    items = drawn(figure)
    assert xspan(items["event-sent:gas-1-1-1:start"][0]) == (12.0, 12.0)
    assert xspan(items["event-arrived:gas-1-1-1:start"][0]) == (12.4, 12.4)
    assert xspan(items["delay:gas-1-1-1:start"][0]) == (12.0, 12.4)
    assert xspan(items["event-sent:gas-1-1-1:end"][0]) == (35.0, 35.0)
    assert xspan(items["event-arrived:gas-1-1-1:end"][0]) == (40.5, 40.5)
    delay = items["delay:gas-1-1-1:end"][0]
    assert delay.get_linestyle() == ":"  # replayed after the outage
    # the camera: a bar from the start's own time to the end's, each arrival marked
    assert xspan(items["event-sent:cam-1-a-1-1:end"][0]) == (5.0, 8.0)
    assert xspan(items["event-arrived:cam-1-a-1-1:end"][0]) == (8.2, 8.2)


def test_the_figure_draws_thresholds_windows_and_presence(figure: Any) -> None:
    items = drawn(figure)
    (alarm,) = items["threshold:alarm"]
    assert list(alarm.get_ydata()) == [1500.0, 1500.0]
    assert len(items["threshold:high"]) == 1
    assert [xspan(w) for w in items["window:expect"]] == [(10.0, 15.0)]
    assert [xspan(w) for w in items["window:none"]] == [(0.0, 9.0)]
    assert sorted(xspan(s) for s in items["state:online"]) == [(0.0, 30.0), (1.0, 60.0),
                                                               (40.0, 50.0)]
    assert [xspan(s) for s in items["state:offline"]] == [(30.0, 40.0)]
    assert [xspan(s) for s in items["state:sleeping"]] == [(50.0, 60.0)]
    # the colours the README names: wanted green, forbidden red; online green, offline
    # red, asleep blue
    for gid, colour in (("window:expect", "tab:green"), ("window:none", "tab:red"),
                        ("state:online", "tab:green"), ("state:offline", "tab:red"),
                        ("state:sleeping", "tab:blue")):
        assert all(to_rgb(a.get_facecolor()) == to_rgb(colour) for a in items[gid]), gid
    assert len(items["fault"]) == 2  # shaded on both nodes' lanes
