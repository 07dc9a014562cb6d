"""Shared fixtures: a real Mosquitto broker per test, the shared models and media."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SAFECITY_SHARED", ROOT.parent / "shared"))
MODELS = SHARED / "models"
MEDIA = SHARED / "media"


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker() as b:
        yield b


@pytest.fixture(scope="session")
def yolox_path() -> Path:
    p = MODELS / "yolox_nano.onnx"
    if not p.exists():
        pytest.fail(f"{p} missing: the tests need ../shared/models (see its README)")
    return p


@pytest.fixture(scope="session")
def fall_model_path() -> Path:
    p = MODELS / "fall_yolov8s.onnx"
    if not p.exists():
        pytest.fail(f"{p} missing: the tests need ../shared/models (see its README)")
    return p


@pytest.fixture(scope="session")
def vtest_path() -> Path:
    p = MEDIA / "vtest.avi"
    if not p.exists():
        pytest.fail(f"{p} missing: the tests need ../shared/media (see its README)")
    return p


@pytest.fixture(scope="session")
def dynamic_path(yolox_path, tmp_path_factory) -> Path:
    """The dynamic-input copy of YOLOX-Nano that flash.sh installs on a camera node."""
    from edge_agent.modeltools.dynamic import make_dynamic

    out = tmp_path_factory.mktemp("dynamic") / "yolox_nano_dynamic.onnx"
    report = make_dynamic(yolox_path, out, timing_runs=1)
    assert report.path == out and report.nominal == (416, 416)
    return out


@pytest.fixture
def pins() -> Iterator[Any]:
    """gpiozero's mock pins for an agent built in this process: drive them as a button,
    a switch or a relay would."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory as Factory

    before = Device.pin_factory
    Device.pin_factory = factory = Factory()
    yield factory
    factory.reset()
    Device.pin_factory = before
