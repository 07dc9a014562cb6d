"""flash.sh pi: --root DIR builds a tree whose unit passes systemd-analyze verify, whose
installed agent accepts the generated config, and that is the same after a second run;
--host and --dry-run print their plan; refusals write nothing; the model comes from the
catalog, checked by sha256, offline.

The venv re-uses this checkout's dependencies (--deps-from, a .pth link) instead of
downloading them; the agent itself is a wheel built from the checkout and installed by pip."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MODELS
from tests.test_flash import run_flash, tree

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent
HW = ROOT / "hw"
SITE, NODE = "plaza", "cam-01"
PROD_EXEC = "/opt/safecity-edge/venv/bin/edge-agent"
CATALOG = tomllib.loads((ROOT / "models" / "catalog.toml").read_text())
MODEL = CATALOG["models"][CATALOG["default"]]
RUN_FILE = MODEL["file"].removesuffix(".onnx") + "_dynamic.onnx"
"""What the node runs by default: the model's dynamic-input copy, made by flash.sh."""


def pi_args(root: Path | None, **over: str | None) -> list[str]:
    opts: dict[str, str | None] = {
        "--root": str(root) if root else None, "--device-id": NODE, "--site": SITE,
        "--broker": "broker.city.example:1883", "--models-from": str(MODELS),
        "--deps-from": str(VENV)}
    opts.update(over)
    out = ["pi"]
    for k, v in opts.items():
        if v is not None:
            out += [k, v]
    return out


def snapshot(d: Path) -> dict[str, Any]:
    """Content, mode and link target of everything under d; __pycache__ is left out
    (byte-compiled files embed their source's mtime)."""
    out: dict[str, Any] = {}
    for rel, digest in tree(d).items():
        if "__pycache__" in rel:
            continue
        p = d / rel
        out[rel] = (digest, stat.S_IMODE(p.lstat().st_mode))
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One `flash.sh pi --root DIR` run shared by the tests of this module."""
    home = tmp_path_factory.mktemp("pi-home")
    root = home / "root"
    r = run_flash(pi_args(root), home)
    assert r.returncode == 0, r.stdout + r.stderr
    yield {"home": home, "root": root, "out": r.stdout}


def test_root_install_lays_out_the_node(installed: dict[str, Any]) -> None:
    root: Path = installed["root"]
    out: str = installed["out"]
    etc = root / "etc" / "safecity-edge"
    assert stat.S_IMODE((etc / "node.toml").stat().st_mode) == 0o640
    assert stat.S_IMODE(etc.stat().st_mode) == 0o750
    for rel, src in [("etc/systemd/system/edge-agent.service", "systemd/edge-agent.service"),
                     ("usr/lib/sysusers.d/safecity-edge.conf",
                      "systemd/safecity-edge.sysusers.conf"),
                     ("usr/lib/tmpfiles.d/safecity-edge.conf",
                      "systemd/safecity-edge.tmpfiles.conf"),
                     ("etc/udev/rules.d/99-safecity-camera.rules",
                      "camera-node/99-safecity-camera.rules"),
                     ("opt/safecity-edge/hw/systemd/README.md", "systemd/README.md")]:
        assert (root / rel).read_bytes() == (HW / src).read_bytes(), rel
        assert stat.S_IMODE((root / rel).stat().st_mode) == 0o644
    models = root / "var/lib/safecity-edge/models"
    assert tree(models)[MODEL["file"]] == MODEL["sha256"]
    assert stat.S_IMODE((models / MODEL["file"]).stat().st_mode) == 0o644
    assert (models / "coco.txt").read_bytes() == (ROOT / "models" / "coco.txt").read_bytes()
    # the copy the node runs: input height and width free, the published size recorded
    assert stat.S_IMODE((models / RUN_FILE).stat().st_mode) == 0o644
    import onnxruntime as ort
    session = ort.InferenceSession(str(models / RUN_FILE), providers=["CPUExecutionProvider"])
    _, _, h, w = session.get_inputs()[0].shape
    assert isinstance(h, str) and isinstance(w, str)
    assert session.get_modelmeta().custom_metadata_map["nominal_input"] == "416x416"
    # the service user must be able to run the agent: nothing in the venv is private
    agent = root / PROD_EXEC.lstrip("/")
    assert stat.S_IMODE(agent.stat().st_mode) & 0o005 == 0o005
    link = root / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    assert os.readlink(link) == "/etc/systemd/system/edge-agent.service"
    # order of the work as printed
    steps = [ln for ln in out.splitlines() if ln.startswith("+ ")]
    order = ["helper ensure-password", "pip wheel", "models fetch", "models dynamic",
             "helper render",
             "-m venv", "pip --python", "check-config", "systemctl --root="]
    at = [next(i for i, s in enumerate(steps) if k in s) for k in order]
    assert at == sorted(at), steps
    assert f"{installed['root']}/etc/safecity-edge/node.toml: ok (node {SITE}/{NODE}" in out
    password = (installed["home"] / "state/nodes" / NODE / "mqtt_password").read_text().strip()
    assert password not in out


def test_generated_config_carries_the_node_and_its_credentials(installed: dict[str, Any]) -> None:
    cfg = tomllib.loads((installed["root"] / "etc/safecity-edge/node.toml").read_text())
    password = (installed["home"] / "state/nodes" / NODE / "mqtt_password").read_text().strip()
    assert cfg["node"] == {"id": NODE, "site": SITE, "state_dir": "/var/lib/safecity-edge"}
    assert cfg["mqtt"] == {"host": "broker.city.example", "port": 1883, "username": NODE,
                           "password": password}
    assert cfg["detector"]["model"] == f"/var/lib/safecity-edge/models/{RUN_FILE}"
    assert cfg["detector"]["labels"] == "/var/lib/safecity-edge/models/coco.txt"
    passwd = (installed["home"] / "state/nodes" / NODE / "mosquitto.passwd").read_text()
    assert passwd.startswith(f"{NODE}:$7$101$") and passwd in installed["out"]


def test_installed_agent_accepts_the_generated_config(installed: dict[str, Any]) -> None:
    root: Path = installed["root"]
    venv = root / "opt/safecity-edge/venv"
    r = subprocess.run([str(venv / "bin/edge-agent"), "check-config",
                        str(root / "etc/safecity-edge/node.toml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "detector.model: /var/lib/safecity-edge/models/" in r.stderr, \
        "outside the image the model path leads nowhere, and check-config says so"
    r = subprocess.run([str(venv / "bin/edge-agent"), "check-config", "--root", str(root),
                        str(root / "etc/safecity-edge/node.toml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"ok (node {SITE}/{NODE}, 0 rules)" in r.stdout
    # and it is the installed copy that runs, not this checkout (cwd: `-c` puts it first)
    r = subprocess.run([str(venv / "bin/python"), "-c",
                        "import edge_agent, importlib.metadata as m; "
                        "print(edge_agent.__file__); print(m.version('safecity-edge'))"],
                       capture_output=True, text=True, timeout=60, cwd=root)
    where, version = r.stdout.split()
    assert Path(where).is_relative_to(venv) and version == "0.1.0"


def test_unit_in_the_tree_passes_systemd_analyze_verify(installed: dict[str, Any],
                                                         tmp_path: Path) -> None:
    """As in test_systemd_units: verify needs ExecStart to exist on this machine, so a copy
    of the installed unit points at the tree's entry point; nothing else changes."""
    root: Path = installed["root"]
    unit = (root / "etc/systemd/system/edge-agent.service").read_text()
    assert unit.count(PROD_EXEC) == 1
    agent = root / PROD_EXEC.lstrip("/")
    assert agent.is_file() and os.access(agent, os.X_OK)
    copy = tmp_path / "edge-agent.service"
    copy.write_text(unit.replace(PROD_EXEC, str(agent)))
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze missing: Debian package systemd (make deps installs it)")
    r = subprocess.run([exe, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 0 and problems == []
    r = subprocess.run(["systemctl", f"--root={root}", "is-enabled", "edge-agent.service"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "enabled"


def test_first_boot_gives_the_config_to_the_service_group(installed: dict[str, Any],
                                                          tmp_path: Path) -> None:
    """What systemd-sysusers and systemd-tmpfiles do at the image's first boot, run on a
    copy of the tree's /etc and /var: node.toml ends up root:safecity 0640."""
    root = tmp_path / "root"
    for part in ("etc", "usr/lib/sysusers.d", "usr/lib/tmpfiles.d", "var"):
        shutil.copytree(installed["root"] / part, root / part, symlinks=True)
    r = subprocess.run(["systemd-sysusers", f"--root={root}"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    gid = next(int(ln.split(":")[2]) for ln in (root / "etc/group").read_text().splitlines()
               if ln.startswith("safecity:"))
    st = (root / "etc/safecity-edge/node.toml").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, 0o640)


def test_second_run_gives_the_same_tree(installed: dict[str, Any]) -> None:
    root: Path = installed["root"]
    before = snapshot(root)
    state = tree(installed["home"] / "state")
    r = run_flash(pi_args(root), installed["home"])
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines.count("reused") == 2  # password and password-file line
    assert not any(ln.startswith("generated") for ln in lines)
    assert snapshot(root) == before
    assert tree(installed["home"] / "state") == state


def test_udev_rule_is_well_formed() -> None:
    """`udevadm verify` arrived in systemd 254; Debian 12 has 252, so the rule file is
    parsed here: every line is comma-separated KEY=="v" matches and KEY="v" assignments,
    and it gives cameras to video and GPIO chips to gpio."""
    text = (HW / "camera-node" / "99-safecity-camera.rules").read_text()
    udevadm = shutil.which("udevadm")
    if udevadm and "verify" in subprocess.run([udevadm, "--help"], capture_output=True,
                                              text=True).stdout:
        r = subprocess.run([udevadm, "verify", str(HW / "camera-node/99-safecity-camera.rules")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    match_keys = {"SUBSYSTEM", "KERNEL", "ACTION", "ATTR", "DRIVER"}
    assign_keys = {"GROUP", "MODE", "OWNER", "TAG"}
    token = re.compile(r'^([A-Z]+)(==|!=|=|\+=)"([^"]*)"$')
    rules = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [t.strip() for t in line.split(",")]
        parsed = [token.match(t) for t in parts]
        assert all(parsed), line
        matches = {m[1]: m[3] for m in parsed if m and m[2] in ("==", "!=")}
        assigns = {m[1]: m[3] for m in parsed if m and m[2] in ("=", "+=")}
        assert matches and set(matches) <= match_keys, line
        assert assigns and set(assigns) <= assign_keys, line
        assert re.fullmatch(r"0[0-7]{3}", assigns.get("MODE", "0660")), line
        rules.append((matches, assigns))
    groups = {(m.get("SUBSYSTEM") or m.get("KERNEL")): a["GROUP"] for m, a in rules}
    assert groups["video4linux"] == "video" and groups["media"] == "video"
    assert groups["gpio"] == "gpio"


# -- plans and refusals ------------------------------------------------------------------

def test_root_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    root = tmp_path / "root"
    # the offline model folder from the environment this time
    r = run_flash(pi_args(root, **{"--models-from": None}) + ["--dry-run"], home,
                  env={"SAFECITY_MODELS_FROM": str(MODELS)})
    assert r.returncode == 0, r.stderr
    steps = [ln for ln in r.stdout.splitlines() if ln.startswith("+ ")]
    for k in ("helper ensure-password", "pip wheel", f"mkdir -p -- {root}",
              f"edge_agent.cli models fetch yolox-nano --dir {root}/var/lib/safecity-edge/models"
              f" --from {MODELS.resolve()}",
              f"edge_agent.cli models dynamic {root}/var/lib/safecity-edge/models/"
              f"{MODEL['file']} --out {root}/var/lib/safecity-edge/models/{RUN_FILE}",
              f"MODEL_PATH=s:/var/lib/safecity-edge/models/{RUN_FILE}",
              "helper render", "-m venv --without-pip", "check-config",
              f"systemctl --root={root} --quiet enable edge-agent.service"):
        assert any(k in s for s in steps), k
    assert not root.exists()
    assert tree(home) == {"tmp": "dir"}


def test_fixed_input_runs_the_model_as_published(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    root = tmp_path / "root"
    r = run_flash(pi_args(root) + ["--fixed-input", "--dry-run"], home)
    assert r.returncode == 0, r.stderr
    steps = [ln for ln in r.stdout.splitlines() if ln.startswith("+ ")]
    assert not any("models dynamic" in s for s in steps)
    assert any(f"MODEL_PATH=s:/var/lib/safecity-edge/models/{MODEL['file']}" in s
               for s in steps)
    assert not root.exists()


@pytest.mark.parametrize("host", ["pi@cam-01.local", "cam-01"])  # cam-01: an ssh alias
def test_host_dry_run_prints_the_remote_steps(tmp_path: Path, host: str) -> None:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    r = run_flash(pi_args(None, **{"--host": host, "--deps-from": None}) +
                  ["--dry-run"], home)
    assert r.returncode == 0, r.stderr
    steps = [ln for ln in r.stdout.splitlines() if ln.startswith("+ ")]
    remote = [s.split(f"{host} ", 1)[1] for s in steps if "ssh" in s]
    assert remote[0].startswith("sudo tar -C / --no-overwrite-dir --no-same-owner -xf -")
    assert "tar -C" in steps[[i for i, s in enumerate(steps) if "ssh" in s][0]]
    expected = ["sudo systemd-sysusers", "sudo systemd-tmpfiles --create", "sudo udevadm control",
                "sudo udevadm trigger", "sudo python3 -m venv --system-site-packages",
                "sudo python3 -c import",  # the venv's numpy pinned to the OS's
                "sudo /opt/safecity-edge/venv/bin/pip install --quiet --constraint "
                "/opt/safecity-edge/constraints.txt",
                "sudo /opt/safecity-edge/venv/bin/pip install --quiet --no-deps --force-reinstall",
                f"sudo {PROD_EXEC} check-config /etc/safecity-edge/node.toml",
                "sudo systemctl daemon-reload", "sudo systemctl enable edge-agent.service",
                "sudo systemctl restart edge-agent.service"]
    assert len(remote) == 1 + len(expected)
    for got, want in zip(remote[1:], expected, strict=True):
        assert got.startswith(want), (got, want)
    assert tree(home) == {"tmp": "dir"}


def _bad_models(tmp: Path) -> str:
    d = tmp / "bad-models"
    d.mkdir(exist_ok=True)
    (d / MODEL["file"]).write_bytes(b"not the model")
    return str(d)


PI_REFUSALS: list[tuple[str, Any, str]] = [
    ("model checksum mismatch", lambda t: {"--models-from": _bad_models(t)},
     f"checksum mismatch for {{t}}/bad-models/{MODEL['file']}"),
    ("model missing offline", lambda t: {"--models-from": str(t)},
     f"has no {MODEL['file']} (model {CATALOG['default']})"),
    ("root and host", lambda t: {"--host": "pi@cam-01"},
     "give exactly one of --root DIR or --host"),
    ("neither root nor host", lambda t: {"--root": None}, "give exactly one of --root DIR"),
    ("bad host", lambda t: {"--root": None, "--host": "pi@", "--deps-from": None},
     "--host 'pi@' is not USER@HOST or an ssh alias"),
    ("unsafe device id", lambda t: {"--device-id": "cam+1"}, "is not a safe MQTT topic segment"),
    ("reserved device id", lambda t: {"--device-id": "homeassistant"}, "is reserved"),
    ("unsafe site", lambda t: {"--site": "a/b"}, "--site 'a/b' is not a safe MQTT topic segment"),
    ("broker not host:port", lambda t: {"--broker": "bro ker"}, "is not HOST:PORT"),
    ("tls port without ca", lambda t: {"--broker": "broker:8883"}, "give its CA certificate"),
    ("deps venv missing", lambda t: {"--deps-from": str(t / "nope")}, "is not a venv"),
    ("template missing", lambda t: {"--config-template": str(t / "none.toml.in")},
     "none.toml.in does not exist"),
    ("esp32 option", lambda t: {"--board": "gas"}, "unknown option '--board' for mode pi"),
]


@pytest.mark.parametrize("case, over, message", PI_REFUSALS, ids=[c[0] for c in PI_REFUSALS])
def test_pi_refusals_say_why_and_write_nothing(tmp_path: Path, case: str, over: Any,
                                               message: str) -> None:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    root = tmp_path / "root"
    extra = tmp_path / "x"
    extra.mkdir()
    args = pi_args(root, **over(extra))
    before = tree(tmp_path)
    r = run_flash(args, home)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message.replace("{t}", str(extra)) in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "+ " not in r.stdout
    assert tree(tmp_path) == before and not root.exists()


def test_without_onnx_the_dynamic_copy_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    """A technician's Python without the onnx package: refused up front, with the way out."""
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    shim = tmp_path / "no-onnx"
    shim.mkdir()
    (shim / "onnx.py").write_text("raise ImportError('onnx is not installed here')\n")
    root = tmp_path / "root"
    before = tree(tmp_path)
    r = run_flash(pi_args(root), home,
                  env={"PYTHONPATH": str(shim), "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no onnx package to make the model's dynamic-input copy" in r.stderr
    assert "--fixed-input" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "+ " not in r.stdout
    assert tree(tmp_path) == before and not root.exists()


def test_models_fetch_cli_works_offline_and_rejects_a_bad_checksum(tmp_path: Path) -> None:
    """`edge-agent models fetch yolox-nano --from ../shared/models` (test_catalog covers
    the function; this is the command, with every download made to fail)."""
    env = {**os.environ, "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    cli = [str(VENV / "bin" / "edge-agent"), "models", "fetch", "yolox-nano"]
    r = subprocess.run(cli + ["--dir", str(tmp_path / "ok"), "--from", str(MODELS)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert tree(tmp_path / "ok")[MODEL["file"]] == MODEL["sha256"]
    r = subprocess.run(cli + ["--dir", str(tmp_path / "bad"), "--from", _bad_models(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "checksum mismatch" in r.stderr and "nothing was installed" in r.stderr
    assert not (tmp_path / "bad" / MODEL["file"]).exists()


def test_the_venv_numpy_is_pinned_to_the_one_the_os_python_has(tmp_path: Path) -> None:
    """What flash.sh runs with the node's own python before pip: the OS's numpy (the one
    its picamera2 is built against) becomes a constraint; without one, nothing is pinned."""
    import re
    import subprocess
    import sys

    snippet = re.search(r"^NUMPY_PIN_PY='(.*)'$", (ROOT / "flash.sh").read_text(), re.M)
    assert snippet
    out = tmp_path / "constraints.txt"
    r = subprocess.run([sys.executable, "-c", snippet[1], str(out)], capture_output=True,
                       text=True, check=True)
    import numpy
    assert out.read_text() == f"numpy=={numpy.__version__}\n"
    assert r.stdout.strip() == f"venv numpy: {numpy.__version__}"
    r = subprocess.run([sys.executable, "-S", "-c", snippet[1], str(out)],  # no site: no numpy
                       capture_output=True, text=True, check=True)
    assert out.read_text() == "" and "any" in r.stdout


@pytest.mark.parametrize("brokers, want", [
    ("broker.city.example:1883", {"host": "broker.city.example", "port": 1883}),
    ("10.0.0.1:1883,10.0.0.2:1883,nats-3.city.example:1883",
     {"brokers": [{"host": "10.0.0.1", "port": 1883}, {"host": "10.0.0.2", "port": 1883},
                  {"host": "nats-3.city.example", "port": 1883}]}),
])
def test_the_broker_list_renders_the_mqtt_keys_the_agent_takes(
        tmp_path: Path, brokers: str, want: dict[str, Any]) -> None:
    """What `--broker` gives `flash.sh pi` (one broker, or a cluster's members in order)
    becomes [mqtt] host and port, or its brokers list, and the agent's config loads it."""
    from edge_agent.config import load_config

    helper = (ROOT / "flash.sh").read_text().split("HELPER_PY=$(cat <<'PYEOF'\n", 1)[1]
    helper = helper.split("\nPYEOF", 1)[0]
    (tmp_path / "pw").write_text("secret\n")
    out = tmp_path / "node.toml"
    r = subprocess.run(
        [sys.executable, "-c", helper, "render", str(HW / "camera-node" / "node.toml.in"),
         str(out), "0640", f"NODE_ID=s:{NODE}", f"SITE=s:{SITE}",
         f"MQTT_BROKERS=brokers:{brokers}", f"MQTT_USERNAME=s:{NODE}",
         f"MQTT_PASSWORD=f:{tmp_path / 'pw'}", "MQTT_TLS=raw:",
         f"MODEL_PATH=s:{tmp_path / 'm.onnx'}", "LABELS=raw:"],
        capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads(out.read_text())
    assert {k: v for k, v in cfg["mqtt"].items() if k in ("host", "port", "brokers")} == want
    loaded = load_config(out)
    assert [f"{b.host}:{b.port}" for b in loaded.mqtt.addresses] == brokers.split(",")
