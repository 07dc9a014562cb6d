"""hw/systemd files checked by systemd's own tools (Debian's systemd package).

`systemd-analyze verify` exits 0 even when it ignores unknown keys, so any line it prints
about the unit fails the test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HW = Path(__file__).resolve().parent.parent / "hw" / "systemd"
UNIT = HW / "edge-agent.service"
PROD_EXEC = "/opt/safecity-edge/venv/bin/edge-agent"


def tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} missing: install Debian's systemd package (make test does)")
    return exe


def verify(unit_text: str, tmp_path: Path, name: str = "edge-agent.service") -> list[str]:
    """Lines systemd-analyze prints about the unit. verify needs ExecStart's binary to
    exist, so the copy runs this venv's edge-agent instead of the /opt one; nothing else
    in the unit changes."""
    agent = Path(sys.executable).parent / "edge-agent"
    assert agent.exists(), f"{agent} missing: pip install -e . creates it"
    assert unit_text.count(PROD_EXEC) == 1
    path = tmp_path / name
    path.write_text(unit_text.replace(PROD_EXEC, str(agent)))
    r = subprocess.run([tool("systemd-analyze"), "verify", str(path)], capture_output=True,
                       text=True, timeout=60)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    if r.returncode != 0:
        lines.append(f"exit status {r.returncode}")
    return lines


def settings(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def test_unit_passes_systemd_analyze_verify_without_warnings(tmp_path: Path) -> None:
    assert verify(UNIT.read_text(), tmp_path) == []


def test_the_check_catches_what_verify_only_warns_about(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("[Service]\n", "[Service]\nWatchdogSecs=30\n")
    problems = verify(broken, tmp_path)
    assert any("WatchdogSecs" in p for p in problems), problems


def test_unit_declares_the_service_contract() -> None:
    s = settings(UNIT.read_text())
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["WatchdogSec"] == "30" and s["Restart"] == "on-failure"
    assert s["ExecStart"] == f"{PROD_EXEC} run --config /etc/safecity-edge/node.toml"
    assert s["User"] == "safecity" and set(s["SupplementaryGroups"].split()) == {"video", "gpio"}
    assert s["StateDirectory"] == "safecity-edge"
    assert s["ReadWritePaths"] == "/var/lib/safecity-edge"  # the spool, nothing else
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes"
    assert s["ProtectHome"] == "yes" and s["PrivateTmp"] == "yes"
    assert s["CapabilityBoundingSet"] == ""


def test_sysusers_and_tmpfiles_create_user_groups_and_dirs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    r = subprocess.run([tool("systemd-sysusers"), f"--root={root}",
                        str(HW / "safecity-edge.sysusers.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    passwd = {ln.split(":")[0]: ln.split(":") for ln in (root / "etc/passwd").read_text()
              .splitlines()}
    groups = {ln.split(":")[0]: ln.split(":") for ln in (root / "etc/group").read_text()
              .splitlines()}
    assert passwd["safecity"][6] == "/usr/sbin/nologin"
    assert "safecity" in groups["video"][3].split(",")
    assert "safecity" in groups["gpio"][3].split(",")

    r = subprocess.run([tool("systemd-tmpfiles"), f"--root={root}", "--create",
                        str(HW / "safecity-edge.tmpfiles.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    uid, gid = int(passwd["safecity"][2]), int(groups["safecity"][2])
    etc = (root / "etc/safecity-edge").stat()
    assert (etc.st_uid, etc.st_gid, etc.st_mode & 0o777) == (0, gid, 0o750)
    state = (root / "var/lib/safecity-edge").stat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o777) == (uid, gid, 0o750)
