"""GPIO behaviour on gpiozero's mock pin factory: LED patterns, relay, SOS and tamper inputs."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from edge_agent.config import GpioConfig
from edge_agent.gpio import Gpio, GpioError

LED, RELAY, SOS, TAMPER = 5, 6, 17, 27


def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def seen_states(pin: Any, window_s: float) -> set[bool]:
    """States the pin took during the window (from the mock pin's own history)."""
    start = len(pin.states)
    time.sleep(window_s)
    return {s.state for s in pin.states[start:]} | {pin.state}


class Inputs:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, event_type: str, phase: str, name: str) -> None:
        with self._lock:
            self.calls.append((event_type, phase, name))


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


def make(factory: MockFactory, inputs: Inputs | None = None, **cfg: Any) -> Gpio:
    gpio = Gpio.from_config(GpioConfig(**cfg), inputs or Inputs(), pin_factory=factory)
    assert gpio is not None
    return gpio


def test_nothing_configured_never_imports_gpiozero() -> None:
    code = ("import sys; from edge_agent.config import GpioConfig; from edge_agent.gpio import "
            "Gpio; assert Gpio.from_config(GpioConfig(), lambda *a: None) is None; "
            "assert 'gpiozero' not in sys.modules, 'gpiozero was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_led_patterns_follow_node_state(factory: MockFactory) -> None:
    gpio = make(factory, status_led=LED, alarm_events=["fall"], alarm_s=0.5)
    pin = factory.pin(LED)
    assert gpio.led is not None and gpio.led.pattern == "starting"
    assert seen_states(pin, 0.5) == {True, False}          # fast blink while starting

    gpio.set_state("running")
    assert gpio.led.pattern == "running"
    assert seen_states(pin, 0.3) == {True}                 # steady on

    gpio.set_state("broker_offline")
    assert gpio.led.pattern == "broker_offline"
    assert eventually(lambda: pin.state is False)          # slow blink reaches off...
    assert eventually(lambda: pin.state is True)           # ...and on again

    gpio.set_state("camera_offline")                       # a short flash every 2 s
    assert gpio.led.pattern == "camera_offline"
    assert eventually(lambda: pin.state is True, 3.0)
    assert eventually(lambda: pin.state is False)
    assert seen_states(pin, 0.5) == {False}                # dark for 1.8 s between flashes

    gpio.set_state("running")
    gpio.on_event("line_crossing", "instant", "cam-1-1-1")  # not an alarm type
    assert gpio.led.pattern == "running"
    gpio.on_event("fall", "instant", "cam-1-1-2")
    assert gpio.led.pattern == "alarm"
    assert seen_states(pin, 0.2) == {True, False}          # rapid blink
    gpio.set_state("running")                              # loop keeps calling; no effect
    assert gpio.led.pattern == "alarm"
    assert eventually(lambda: gpio.led is not None and gpio.led.pattern == "running")
    assert seen_states(pin, 0.2) == {True}                 # back to steady after alarm_s
    gpio.close()


def test_relay_on_while_event_open(factory: MockFactory) -> None:
    gpio = make(factory, relay=RELAY, relay_events=["intrusion", "fall"], relay_hold_s=0.4)
    pin = factory.pin(RELAY)
    assert pin.state is False
    gpio.on_event("line_crossing", "instant", "c-1-1-1")
    assert pin.state is False                               # not a relay event type
    gpio.on_event("intrusion", "start", "c-1-1-2")
    gpio.on_event("intrusion", "start", "c-1-1-3")
    assert pin.state is True
    gpio.on_event("intrusion", "update", "c-1-1-2")
    gpio.on_event("intrusion", "end", "c-1-1-2")
    assert pin.state is True                                # the other one is still open
    gpio.on_event("intrusion", "end", "c-1-1-3")
    assert pin.state is False
    gpio.close()


def test_relay_holds_for_instant_events_and_open_events_outlast_hold(
        factory: MockFactory) -> None:
    gpio = make(factory, relay=RELAY, relay_events=["intrusion", "fall"], relay_hold_s=0.4)
    pin = factory.pin(RELAY)
    gpio.on_event("fall", "instant", "c-1-1-1")
    assert pin.state is True
    assert eventually(lambda: pin.state is False)           # released after the hold

    gpio.on_event("fall", "instant", "c-1-1-2")
    gpio.on_event("intrusion", "start", "c-1-1-3")
    time.sleep(0.6)                                         # hold is over, intrusion is not
    assert pin.state is True
    gpio.on_event("intrusion", "end", "c-1-1-3")
    assert pin.state is False
    gpio.close()


def test_active_low_relay(factory: MockFactory) -> None:
    gpio = make(factory, relay=RELAY, relay_active_high=False, relay_events=["sos"])
    pin = factory.pin(RELAY)
    assert pin.state is True                                # off = high on an active-low board
    gpio.on_event("sos", "start", "x")
    assert pin.state is False
    gpio.close()


def test_sos_button_raises_an_instant_event(factory: MockFactory) -> None:
    inputs = Inputs()
    gpio = make(factory, inputs, sos_button=SOS, bounce_s=0)
    pin = factory.pin(SOS)
    assert inputs.calls == []
    pin.drive_low()                                          # pressed (switch to ground)
    assert eventually(lambda: inputs.calls == [("sos", "instant", f"GPIO{SOS}")])
    pin.drive_high()                                         # released: nothing more
    pin.drive_low()
    assert eventually(lambda: len(inputs.calls) == 2)
    assert inputs.calls[1] == ("sos", "instant", f"GPIO{SOS}")
    gpio.close()


def test_tamper_switch_start_and_end(factory: MockFactory) -> None:
    inputs = Inputs()
    # the lid contact is open at boot (pulled high): reported at once
    gpio = make(factory, inputs, tamper_switch=TAMPER, bounce_s=0)
    pin = factory.pin(TAMPER)
    assert inputs.calls == [("tamper_switch", "start", f"GPIO{TAMPER}")]
    pin.drive_low()                                          # lid closed
    assert eventually(lambda: len(inputs.calls) == 2)
    pin.drive_high()                                         # lid opened
    assert eventually(lambda: len(inputs.calls) == 3)
    assert [c[1] for c in inputs.calls] == ["start", "end", "start"]
    gpio.close()


def test_tamper_active_when_closed(factory: MockFactory) -> None:
    inputs = Inputs()
    gpio = make(factory, inputs, tamper_switch=TAMPER, tamper_active_when="closed", bounce_s=0)
    pin = factory.pin(TAMPER)
    assert inputs.calls == []
    pin.drive_low()
    assert eventually(lambda: inputs.calls == [("tamper_switch", "start", f"GPIO{TAMPER}")])
    gpio.close()


def test_bad_pin_names_the_field_and_frees_claimed_pins(factory: MockFactory) -> None:
    with pytest.raises(GpioError, match=r"gpio\.relay: 'GPIO99'"):
        make(factory, status_led=LED, relay="GPIO99")
    gpio = make(factory, status_led=LED)                    # LED pin was released again
    gpio.close()
    with pytest.raises(GpioError, match=r"gpio\.sos_button"):
        make(factory, relay=SOS, sos_button=SOS)
