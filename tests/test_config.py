"""Config validation: every error names the field path and the reason; check-config exits 2."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
BASE = """
[node]
id = "cam-01"
site = "site-a"
[camera]
source = "0"
[detector]
model = "m.onnx"
[[zones]]
name = "yard"
points = [[0, 0], [100, 0], [100, 100]]
"""


def errors_for(tmp_path: Path, extra: str) -> list[str]:
    p = tmp_path / "node.toml"
    p.write_text(BASE + extra)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    return info.value.errors


def test_example_config_is_valid():
    cfg = load_config(ROOT / "sim" / "cameras" / "vtest-plaza.toml")
    assert cfg.node.id == "cam-plaza"
    assert {r.type for r in cfg.rules} >= {"intrusion", "crowding", "line_crossing"}
    assert cfg.detector.model.is_absolute()


@pytest.mark.parametrize(("extra", "expected"), [
    ('[mqtt]\nport = 70000\n', "mqtt.port: Input should be less than or equal to 65535"),
    ('[motion]\nthreshold = "high"\n', "motion.threshold:"),
    ('[[rules]]\ntype = "intrusion"\nzone = "nowhere"\n', "rules[0].zone: no zone named 'nowhere'"),
    ('[[rules]]\ntype = "crowding"\nzone = "yard"\nmax_count = -1\n', "rules[0].max_count:"),
    ('[[rules]]\ntype = "teleport"\n', "rules[0]:"),
    ('[[zones]]\nname = "tri"\npoints = [[0, 0], [1, 1]]\n',
     "zones[1].points: polygon needs at least 3 points"),
    ('[[zones]]\nname = "yard"\npoints = [[0, 0], [1, 1], [2, 0]]\n',
     "zones[1].name: duplicate name 'yard'"),
    ('[detector.extra]\nx = 1\n', "detector.extra: unknown field"),
    ('[snapshot]\njpeg_quality = 5\n', "snapshot.jpeg_quality:"),
    ('[[zones]]\nname = "flat"\npoints = [[0, 0], [50, 50], [100, 100], [20, 20]]\n',
     "zones[1].points: polygon has no area"),
    ('[snapshot]\nprivacy_zones = [[[0, 0], [10, 0], [20, 0]]]\n',
     "snapshot.privacy_zones: privacy_zones[0]: polygon has no area"),
    ('[mqtt]\ntopic_prefix = "city/#"\n', "mqtt.topic_prefix: must not contain '#'"),
    ('[mqtt]\ntopic_prefix = "city/+/v1"\n', "mqtt.topic_prefix: must not contain '+'"),
    ('[mqtt]\ntopic_prefix = "/city"\n', "mqtt.topic_prefix: must not start or end with '/'"),
    ('[mqtt]\ntopic_prefix = "$SYS/x"\n', "mqtt.topic_prefix: must not start with '$'"),
    ('[mqtt]\nreconnect_min_s = 90\n', "mqtt: reconnect_min_s (90.0) is above reconnect_max_s"),
    ('[camera]\nsource = "0"\nreconnect_min_s = 60\n',
     "camera: reconnect_min_s (60.0) is above reconnect_max_s"),
    ('[detector]\nmodel = "m.onnx"\nclasses = []\n',
     "detector.classes: an empty list would keep no detection"),
])
def test_each_bad_value_is_named(tmp_path, extra, expected):
    base = BASE
    for section in ("[detector]", "[camera]"):
        if section in extra:
            start = base.index(section)
            end = base.index("\n[", start + 1)
            base = base[:start] + base[end + 1:]
    p = tmp_path / "node.toml"
    p.write_text(base + extra)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    errs = info.value.errors
    assert any(e.startswith(expected) for e in errs), errs


def test_bad_node_id_is_refused(tmp_path):
    p = tmp_path / "n.toml"
    p.write_text(BASE.replace('id = "cam-01"', 'id = "cam/01"'))
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.errors[0].startswith("node.id: must be 1-64 characters")


def test_check_config_cli_exit_codes(tmp_path, yolox_path):
    good = tmp_path / "good.toml"
    good.write_text(BASE.replace('"m.onnx"', f'"{yolox_path}"'))
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + "[mqtt]\nport = 0\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\nid=")
    run = [sys.executable, "-m", "edge_agent.cli", "check-config"]
    ok = subprocess.run(run + [str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    r = subprocess.run(run + [str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and f"{bad}: mqtt.port:" in r.stderr
    r = subprocess.run(run + [str(broken)], capture_output=True, text=True)
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    r = subprocess.run(run + [str(tmp_path / "missing.toml")], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read" in r.stderr


@pytest.mark.parametrize(("extra", "expected"), [
    ('[detector]\nmodel = "m.onnx"\nbackend = "tensorrt"\n', "detector.backend:"),
    ('[detector]\nmodel = "m.onnx"\nworkers = 0\n', "detector.workers:"),
    ('[detector]\nmodel = "m.onnx"\nworkers = 64\n', "detector.workers:"),
    ('[regions]\nmax_regions = 0\n', "regions.max_regions:"),
    ('[regions]\nmin_size = 8\n', "regions.min_size:"),
    ('[regions]\nmargin = -0.1\n', "regions.margin:"),
    ('[regions]\nfull_frame_s = 0\n', "regions.full_frame_s:"),
    ('[regions]\nshape = "round"\n', "regions.shape: unknown field"),
    ('[regions]\nenabled = true\n[motion]\nenabled = false\n',
     "regions.enabled: needs motion.enabled = true"),
    ('[regions]\nenabled = true\nfull_frame_s = 5\n[tracker]\nmax_age_s = 8\n',
     "regions.full_frame_s: 5.0 leaves no room for a missed detection"),
])
def test_performance_settings_name_the_field(tmp_path, extra, expected):
    base = BASE.replace('[detector]\nmodel = "m.onnx"\n', "") if "[detector]" in extra \
        else BASE
    p = tmp_path / "node.toml"
    p.write_text(base + extra)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert any(e.startswith(expected) for e in info.value.errors), info.value.errors


def test_performance_settings_have_working_defaults(tmp_path):
    p = tmp_path / "node.toml"
    p.write_text(BASE + '[regions]\nenabled = true\n')
    cfg = load_config(p)
    assert cfg.detector.backend == "onnxruntime" and cfg.detector.workers == 1
    assert cfg.regions.enabled and cfg.regions.max_regions == 1


def test_track_age_must_outlive_several_motion_refreshes(tmp_path):
    errs = errors_for(tmp_path, "[motion]\nrefresh_s = 2\n[tracker]\nmax_age_s = 5\n")
    assert any(e.startswith("tracker.max_age_s: 5.0 leaves no room for a missed detection")
               and "motion.refresh_s 2.0" in e for e in errs), errs


def test_world_readable_password_is_warned_about_without_showing_it(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text(BASE + '[mqtt]\nusername = "cam-01"\npassword = "hunter2-secret"\n')
    cfg.chmod(0o644)
    run = [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg)]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2  # m.onnx does not exist
    assert "mqtt.password" in proc.stderr and "world-readable" in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout
    cfg.chmod(0o640)
    proc = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert "world-readable" not in proc.stderr


def check(tmp_path: Path, toml: str, overrides: str | None = None) -> subprocess.CompletedProcess:
    p = tmp_path / "node.toml"
    p.write_text(toml)
    if overrides is not None:
        (tmp_path / "state").mkdir(exist_ok=True)
        (tmp_path / "state" / "remote-config.toml").write_text(overrides)
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", "check-config", str(p)],
                          capture_output=True, text=True, timeout=120)


def test_check_config_loads_what_run_would_and_names_every_problem(tmp_path, yolox_path):
    good = BASE.replace('"m.onnx"', f'"{yolox_path}"').replace(
        '[node]\n', f'[node]\nstate_dir = "{tmp_path / "state"}"\n')
    r = check(tmp_path, good)
    assert r.returncode == 0 and ": ok (node site-a/cam-01" in r.stdout, r.stderr

    r = check(tmp_path, BASE)
    assert r.returncode == 2 and "detector.model: " in r.stderr and "m.onnx" in r.stderr, r.stderr

    bad = good + '[[rules]]\ntype = "intrusion"\nzone = "yard"\nlabels = ["unicorn"]\n' \
        '[[rules]]\ntype = "crowding"\nzone = "yard"\nlabel = "dragon"\n' \
        '[[rules]]\ntype = "fall"\nmodel = "no-fall-model.onnx"\n'
    r = check(tmp_path, bad)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert any(re.search(r"rules\[0\]\.labels: 'unicorn' is not a class", x) for x in lines)
    assert any(re.search(r"rules\[1\]\.label: 'dragon' is not a class", x) for x in lines)
    assert any(re.search(r"rules\[2\]\.model: .*no-fall-model\.onnx", x) for x in lines)
    assert "Traceback" not in r.stderr

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = check(tmp_path, good.replace(str(tmp_path / "state"), str(blocker / "state")) +
              f'[mqtt.tls]\nca_file = "{tmp_path / "no-ca.pem"}"\n')
    assert r.returncode == 2
    assert "node.state_dir: " in r.stderr and "is not a directory" in r.stderr, r.stderr
    assert f"mqtt.tls.ca_file: {tmp_path / 'no-ca.pem'}: No such file" in r.stderr

    r = check(tmp_path, good, overrides='[detector]\nclasses = ["unicorn"]\n')
    assert r.returncode == 2 and "remote-config.toml: detector.model:" in r.stderr, r.stderr
    assert "'unicorn'" in r.stderr and "sets the stored changes aside" in r.stderr
    r = check(tmp_path, good, overrides='[snapshot]\njpeg_quality = 60\n')
    assert r.returncode == 0 and "with stored remote changes" in r.stdout, r.stderr


def test_run_refuses_bad_input_with_a_message_not_a_traceback(tmp_path, yolox_path):
    good = BASE.replace('"m.onnx"', f'"{yolox_path}"').replace(
        '[node]\n', f'[node]\nstate_dir = "{tmp_path / "state"}"\n')
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = {
            "state": (good.replace(str(tmp_path / "state"), str(blocker / "state")), [],
                      "node.state_dir: "),
            "tls": (good + f'[mqtt.tls]\nca_file = "{tmp_path / "no-ca.pem"}"\n', [],
                    f"mqtt.tls.ca_file: {tmp_path / 'no-ca.pem'}"),
            "health": (good + f"[health]\nport = {port}\n", [],
                       f"health.port: cannot listen on 127.0.0.1:{port}"),
            "log-level": (good, ["--log-level", "LOUD"], "--log-level: invalid choice"),
        }
        for name, (toml, extra, expected) in cases.items():
            p = tmp_path / f"{name}.toml"
            p.write_text(toml)
            r = subprocess.run([sys.executable, "-m", "edge_agent.cli", "run", "--config",
                                str(p), *extra], capture_output=True, text=True, timeout=120)
            assert r.returncode == 2, (name, r.stderr[-2000:])
            assert expected in r.stderr, (name, r.stderr[-2000:])
            assert "Traceback" not in r.stderr, (name, r.stderr[-2000:])
