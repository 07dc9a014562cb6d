"""Sensor boards raise alarms and faults a user would see: the real firmware under the
MicroPython unix port (the 64K heap plus the simulated clock module) against a real
Mosquitto broker."""

from __future__ import annotations

import time
from pathlib import Path

from sim.broker import MosquittoBroker
from sim.physics import Earthquake, Traffic
from tests.firmware_helpers import board, docs, online, wait_doc


def test_gas_warms_up_then_alarms_and_reports_an_open_circuit_as_a_fault(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas", config={"gas": {"warmup_s": 3}},
               setup=lambda b: b.set_gas_ppm(3000)) as (b, rec):
        birth = online(rec)
        assert birth["kind"] == "gas" and birth["reset_cause"] == "power_on"
        tele = wait_doc(rec, "/telemetry", lambda d: True)
        assert tele["metrics"]["gas_state"] == "warming_up"
        start = wait_doc(rec, "/event/gas", lambda d: d["phase"] == "start")
        assert start["uptime_ms"] >= 3000, "gas reported while the heater was warming up"
        assert start["details"]["level"] == "alarm"
        assert 2500 <= start["details"]["ppm"] <= 3500
        assert start["event_id"] == f"b1-{start['boot']}-{start['seq']}"
        b.set_gas_ppm(8000)
        up = wait_doc(rec, "/event/gas", lambda d: d["phase"] == "update")
        assert up["details"]["level"] == "high" and up["event_id"] == start["event_id"]
        b.set_gas_ppm(0)
        end = wait_doc(rec, "/event/gas", lambda d: d["phase"] == "end")
        assert end["event_id"] == start["event_id"] and end["duration_s"] > 0
        n_gas = len(docs(rec, "/event/gas"))
        b.set_adc("gas_adc", 0.0)  # wire cut: no current through the load resistor
        fault = wait_doc(rec, "/event/sensor_fault", lambda d: d["phase"] == "start")
        assert fault["details"]["sensor"] == "gas" and fault["details"]["fault"] == "open"
        # 0 V at the pin reads as the ESP32's calibrated floor (0.142 V), never lower
        assert 0.14 <= fault["details"]["value"] <= 0.15
        assert len(docs(rec, "/event/gas")) == n_gas, "an open circuit was reported as gas"
        seqs = [d["seq"] for d in docs(rec, "/event/")]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_flood_inputs_disagreeing_hold_the_alarm_and_name_the_input_that_reads_dry(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "flood") as (b, rec):
        online(rec)
        b.set_float(True)  # water at the float, but the level probe (corroded) reads dry
        start = wait_doc(rec, "/event/flood", lambda d: d["phase"] == "start")
        assert start["details"]["source"] == "float" and start["severity"] == "critical"
        fault = wait_doc(rec, "/event/sensor_fault", lambda d: d["phase"] == "start")
        assert fault["details"]["sensor"] == "probe" and fault["details"]["fault"] == "stuck"
        time.sleep(3)  # longer than stuck_s again: the alarm must still hold
        assert [d for d in docs(rec, "/event/flood") if d["phase"] == "end"] == [], \
            "the probe disagreeing ended a flood the float still reports"
        b.set_float(False)  # both dry now: the alarm ends, and so does the fault
        end = wait_doc(rec, "/event/flood", lambda d: d["phase"] == "end")
        assert end["event_id"] == start["event_id"]
        fend = wait_doc(rec, "/event/sensor_fault", lambda d: d["phase"] == "end")
        assert fend["event_id"] == fault["event_id"]
        assert fend["details"]["sensor"] == "probe"
        # A cut float wire: the pull-ups hold it dry (high) while the probe sees 30 cm.
        b.set_pin("float", 1)
        b.set_level_cm(30)
        start2 = wait_doc(rec, "/event/flood", lambda d: d["phase"] == "start"
                          and d["event_id"] != start["event_id"])
        assert start2["details"]["source"] == "probe"
        fault2 = wait_doc(rec, "/event/sensor_fault", lambda d: d["phase"] == "start"
                          and d["event_id"] != fault["event_id"])
        assert fault2["details"]["sensor"] == "float" and fault2["details"]["fault"] == "stuck"
        assert [d for d in docs(rec, "/event/flood") if d["phase"] == "end"] == [end]
        b.set_level_cm(0)
        end2 = wait_doc(rec, "/event/flood", lambda d: d["phase"] == "end"
                        and d["event_id"] == start2["event_id"])
        assert end2["duration_s"] >= 3


def test_flood_rising_water_alarms_from_the_probe_and_a_chattering_input_is_floating(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "flood", config={"flood": {"level_alarm_cm": 8.0}}) \
            as (b, rec):
        online(rec)
        b.set_adc("probe_adc", {"pw": [[b.board_time(), 0.1], [b.board_time() + 4, 0.6]]})
        start = wait_doc(rec, "/event/flood", lambda d: d["phase"] == "start")
        assert start["details"]["source"] in ("rate", "probe")
        assert start["details"]["level_cm"] > 0
        b.set_pin("float", "floating")
        fault = wait_doc(rec, "/event/sensor_fault", lambda d: d["phase"] == "start")
        assert fault["details"]["fault"] == "floating"


def _samples(signal: Earthquake | Traffic, seconds: float, rate: int = 100
             ) -> list[tuple[float, float, float]]:
    return [signal.accel_g(signal.at_s + i / rate) for i in range(int(seconds * rate))]


def test_quake_burst_alarms_traffic_does_not_and_an_i2c_error_is_a_fault(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "vibration") as (b, rec):
        online(rec)
        time.sleep(2)  # LTA seeded
        traffic = Traffic(at_s=0.0, amplitude_g=0.008, every_s=3.0, burst_s=2.0)
        b.play_accel(_samples(traffic, 8), 100)
        time.sleep(9)
        assert docs(rec, "/event/vibration") == [], "traffic raised a vibration alarm"
        quake = Earthquake(at_s=0.0, peak_g=0.15, s_delay_s=1.0, duration_s=4.0)
        b.play_accel(_samples(quake, 5), 100)
        start = wait_doc(rec, "/event/vibration", lambda d: d["phase"] == "start")
        end = wait_doc(rec, "/event/vibration", lambda d: d["phase"] == "end", 40)
        assert end["event_id"] == start["event_id"]
        assert 0.08 <= end["details"]["peak_g"] <= 0.3
        assert end["details"]["axis"] in ("x", "y")  # the S phase is mostly horizontal
        assert end["duration_s"] >= 1.0 and end["details"]["sta_lta"] >= 4.0
        b.i2c_error(True)
        fault = wait_doc(rec, "/event/sensor_fault", lambda d: d["phase"] == "start")
        assert fault["details"]["fault"] == "i2c" and fault["details"]["sensor"] == "accel"
        b.i2c_error(False)
        wait_doc(rec, "/event/sensor_fault", lambda d: d["phase"] == "end")
        assert b.alive()
