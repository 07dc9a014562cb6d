"""Model catalog: offline fetch with sha256 check, refusal of a tampered file, verify."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_agent.catalog import CatalogError, fetch, load_catalog, sha256_of
from tests.conftest import MODELS


def test_catalog_pins_the_shared_models_by_checksum():
    default, entries = load_catalog()
    assert default == "yolox-nano"
    for entry in entries.values():
        assert sha256_of(MODELS / entry.file) == entry.sha256


def test_fetch_offline_then_reuse(tmp_path):
    path = fetch("yolox-nano", tmp_path / "models", MODELS)
    assert path.read_bytes()[:4] == (MODELS / "yolox_nano.onnx").read_bytes()[:4]
    assert fetch("yolox-nano", tmp_path / "models", None) == path  # verified cache, no source


def test_fetch_refuses_a_file_whose_checksum_does_not_match(tmp_path):
    bad = tmp_path / "offline"
    bad.mkdir()
    (bad / "yolox_nano.onnx").write_bytes(b"not the model")
    with pytest.raises(CatalogError, match="checksum mismatch"):
        fetch("yolox-nano", tmp_path / "models", bad)
    assert not (tmp_path / "models" / "yolox_nano.onnx").exists()


def test_unknown_model_is_named():
    with pytest.raises(CatalogError, match="unknown model 'yolo9000'"):
        fetch("yolo9000", MODELS)


def test_models_cli_fetch_and_verify(tmp_path):
    cli = [sys.executable, "-m", "edge_agent.cli", "models"]
    r = subprocess.run(cli + ["fetch", "yolox-nano", "--dir", str(tmp_path), "--from",
                              str(MODELS)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cli + ["verify", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0 and "yolox-nano: ok" in r.stdout
    (tmp_path / "yolox_nano.onnx").write_bytes(b"corrupted")
    r = subprocess.run(cli + ["verify", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "CHECKSUM MISMATCH" in r.stdout
