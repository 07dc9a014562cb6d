"""Status LED patterns, a relay/siren that follows events, and SOS/tamper inputs via gpiozero.

gpiozero is imported only when a pin is configured, so the agent runs where it is absent;
this module never decides what an event is, it only turns pins into callbacks and back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from edge_agent.config import GpioConfig

log = logging.getLogger(__name__)

LedState = Literal["off", "starting", "running", "camera_offline", "broker_offline"]
InputCallback = Callable[[str, str, str], None]
"""(event_type, phase, input_name): ("sos", "instant", "GPIO17"),
("tamper_switch", "start" | "end", "GPIO27"). Called from gpiozero's thread."""


@dataclass(frozen=True)
class Blink:
    on_s: float
    off_s: float


STEADY: None = None
PATTERNS: dict[str, Blink | None] = {
    "starting": Blink(0.1, 0.1),        # fast blink: loading config, model and spool
    "running": STEADY,                  # steady on: frames flow, broker connected
    "camera_offline": Blink(0.2, 1.8),  # short flash: no frames; inputs and uplink work
    "broker_offline": Blink(1.0, 1.0),  # slow blink: working, events go to the spool
    "alarm": Blink(0.05, 0.05),         # rapid blink for alarm_s after an alarm event
}


class _Timer:
    """One pending callback at a time; re-arming cancels the previous one."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None

    def arm(self, delay_s: float, fn: Callable[[], None]) -> None:
        self.cancel()
        self._timer = threading.Timer(max(delay_s, 0.0), fn)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class StatusLed:
    """One LED showing the node state; an alarm overrides it for a while, then it returns."""

    def __init__(self, led: Any) -> None:
        self.led = led
        self.state: LedState = "off"
        self._alarm_until = 0.0
        self._lock = threading.Lock()
        self._timer = _Timer()
        self.pattern = "off"

    def set_state(self, state: LedState) -> None:
        """Idempotent: call it every loop; the blink only restarts when the state changes."""
        with self._lock:
            if state != self.state:
                self.state = state
                self._apply()

    def alarm(self, seconds: float) -> None:
        with self._lock:
            self._alarm_until = max(self._alarm_until, time.monotonic() + seconds)
            self._timer.arm(self._alarm_until - time.monotonic(), self._alarm_over)
            self._apply()

    def close(self) -> None:
        self._timer.cancel()
        self.led.close()

    def _alarm_over(self) -> None:
        with self._lock:
            self._apply()

    def _apply(self) -> None:
        name = "alarm" if time.monotonic() < self._alarm_until else self.state
        if name == self.pattern:
            return
        self.pattern = name
        if name == "off":
            self.led.off()
            return
        blink = PATTERNS[name]
        if blink is None:
            self.led.on()
        else:
            self.led.blink(on_time=blink.on_s, off_time=blink.off_s, background=True)


class Relay:
    """On while any event of the configured types is open, or for hold_s after an instant one."""

    def __init__(self, device: Any, event_types: list[str], hold_s: float) -> None:
        self.device = device
        self.event_types = frozenset(event_types)
        self.hold_s = hold_s
        self._open: set[str] = set()
        self._hold_until = 0.0
        self._lock = threading.Lock()
        self._timer = _Timer()

    def on_event(self, event_type: str, phase: str, event_id: str) -> None:
        if event_type not in self.event_types:
            return
        with self._lock:
            if phase in ("start", "update"):
                self._open.add(event_id)
            elif phase == "end":
                self._open.discard(event_id)
            else:  # instant
                self._hold_until = max(self._hold_until, time.monotonic() + self.hold_s)
                self._timer.arm(self._hold_until - time.monotonic(), self._evaluate)
            self._set()

    @property
    def is_on(self) -> bool:
        return bool(self.device.value)

    def close(self) -> None:
        self._timer.cancel()
        self.device.off()
        self.device.close()

    def _evaluate(self) -> None:
        with self._lock:
            self._set()

    def _set(self) -> None:
        want = bool(self._open) or time.monotonic() < self._hold_until
        if want != self.is_on:
            if want:
                self.device.on()
            else:
                self.device.off()
            log.info("event=relay_%s pin=%s", "on" if want else "off", self.device.pin)


class Gpio:
    """The node's pins. Build with `Gpio.from_config`; None when nothing is configured."""

    def __init__(self, led: StatusLed | None, relay: Relay | None, inputs: list[Any],
                 alarm_events: list[str], alarm_s: float) -> None:
        self.led = led
        self.relay = relay
        self.inputs = inputs
        self.alarm_events = frozenset(alarm_events)
        self.alarm_s = alarm_s

    @classmethod
    def from_config(cls, cfg: GpioConfig, on_input: InputCallback,
                    pin_factory: Any = None) -> Gpio | None:
        """Claims the configured pins. Raises GpioError naming the pin when one cannot be
        used (not a GPIO on this board, already taken, no GPIO access)."""
        if not cfg.configured:
            return None
        try:
            import gpiozero
        except ImportError as exc:
            raise GpioError("gpio: pins are configured but gpiozero is not installed "
                            "(pip install 'safecity-edge[pi]')") from exc
        kw = {"pin_factory": pin_factory}
        bounce = cfg.bounce_s or None
        claimed: list[Any] = []

        def claim(field: str, make: Callable[[], Any]) -> Any:
            try:
                dev = make()
            except Exception as exc:  # gpiozero raises many kinds; all mean "cannot use"
                for d in claimed:
                    d.close()
                raise GpioError(f"gpio.{field}: {getattr(cfg, field)!r}: {exc}") from exc
            claimed.append(dev)
            return dev

        led = relay = None
        inputs: list[Any] = []
        if cfg.status_led is not None:
            led = StatusLed(claim("status_led", lambda: gpiozero.LED(cfg.status_led, **kw)))
        if cfg.relay is not None:
            relay = Relay(claim("relay", lambda: gpiozero.OutputDevice(
                cfg.relay, active_high=cfg.relay_active_high, initial_value=False, **kw)),
                cfg.relay_events, cfg.relay_hold_s)
        if cfg.sos_button is not None:
            sos = claim("sos_button", lambda: gpiozero.Button(
                cfg.sos_button, pull_up=cfg.pull_up, bounce_time=bounce, **kw))
            sos.when_pressed = lambda: on_input("sos", "instant", str(sos.pin))
            inputs.append(sos)
        if cfg.tamper_switch is not None:
            inputs.append(_tamper(claim("tamper_switch", lambda: gpiozero.Button(
                cfg.tamper_switch, pull_up=cfg.pull_up, bounce_time=bounce, **kw)),
                cfg.tamper_active_when, on_input))
        gpio = cls(led, relay, inputs, cfg.alarm_events, cfg.alarm_s)
        gpio.set_state("starting")
        log.info("event=gpio_ready led=%s relay=%s sos=%s tamper=%s", cfg.status_led, cfg.relay,
                 cfg.sos_button, cfg.tamper_switch)
        return gpio

    def set_state(self, state: LedState) -> None:
        if self.led is not None:
            self.led.set_state(state)

    def on_event(self, event_type: str, phase: str, event_id: str) -> None:
        """Feed every emitted event here (including the node's own sos/tamper_switch)."""
        if self.relay is not None:
            self.relay.on_event(event_type, phase, event_id)
        if self.led is not None and event_type in self.alarm_events \
                and phase in ("start", "instant"):
            self.led.alarm(self.alarm_s)

    def close(self) -> None:
        if self.led is not None:
            self.led.close()
        if self.relay is not None:
            self.relay.close()
        for dev in self.inputs:
            dev.close()


class GpioError(RuntimeError):
    """A configured pin cannot be used; the message names the config field and pin."""


def _tamper(switch: Any, active_when: str, on_input: InputCallback) -> Any:
    """A lid switch: `start` when it enters the tampered position, `end` when it leaves."""
    name = str(switch.pin)
    # pressed == contact closed (with the pull-up wiring)
    tampered_on_press = active_when == "closed"

    def start() -> None:
        on_input("tamper_switch", "start", name)

    def end() -> None:
        on_input("tamper_switch", "end", name)

    switch.when_pressed = start if tampered_on_press else end
    switch.when_released = end if tampered_on_press else start
    if switch.is_pressed == tampered_on_press:
        start()  # already open at boot: report it
    return switch
