"""The node's wheel is the agent alone: edge_agent with its catalog, labels and message
schemas, the `edge-agent` command and nothing of the simulator; installed from the wheel, the
agent finds its schemas. The simulator is its own project, installed editable from the
checkout. The lint and type-check tools are pinned, and the venv runs the pinned versions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def copy_checkout(dest: Path) -> Path:
    """The checkout's sources in a scratch folder, so builds leave nothing in it; the
    simulator goes along, so the wheel has it at hand and must still leave it out."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("edge_agent", "models", "schemas", "sim", "firmware"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = copy_checkout(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([*PIP, "wheel", "--no-deps", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    # setuptools warns of a deprecated licence table, pointing at the guide's #license
    assert "#license" not in r.stdout + r.stderr, r.stdout + r.stderr
    (found,) = out.glob("safecity_edge-*.whl")
    return found


def names(whl: Path) -> list[str]:
    with zipfile.ZipFile(whl) as z:
        return z.namelist()


def dist_info(whl: Path, name: str) -> str:
    with zipfile.ZipFile(whl) as z:
        (path,) = [n for n in z.namelist() if n.endswith(f".dist-info/{name}")]
        return z.read(path).decode()


def test_the_wheel_holds_the_agent_and_no_simulator(wheel: Path) -> None:
    files = names(wheel)
    assert "edge_agent/cli.py" in files and "edge_agent/resources.py" in files
    tops = {f.split("/")[0] for f in files}
    assert tops == {"edge_agent", wheel.name.split("-py3")[0] + ".data",
                    wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert dist_info(wheel, "top_level.txt").split() == ["edge_agent"]


def test_the_wheel_ships_every_schema_and_the_catalog(wheel: Path) -> None:
    files = names(wheel)
    share = [f.split("/data/share/safecity-edge/", 1)[1] for f in files
             if "/data/share/safecity-edge/" in f]
    schemas = sorted(p.name for p in (ROOT / "schemas").glob("*.json"))
    assert schemas and sorted(f.removeprefix("schemas/") for f in share
                              if f.startswith("schemas/")) == schemas
    assert "models/catalog.toml" in share


def test_only_edge_agent_is_a_command_and_the_licence_is_an_spdx_expression(wheel: Path
                                                                          ) -> None:
    entry = dist_info(wheel, "entry_points.txt")
    assert re.findall(r"^(\S+) = ", entry, re.M) == ["edge-agent"]
    meta = dist_info(wheel, "METADATA")
    assert "License-Expression: Apache-2.0" in meta
    assert not re.search(r"^License: ", meta, re.M)  # the deprecated free-text field


def test_installed_from_the_wheel_the_agent_finds_its_schemas(wheel: Path,
                                                              tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    py = venv / "bin" / "python"
    subprocess.run([*PIP, "--python", str(py), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, timeout=120)
    code = ("import json; from edge_agent import resources as r\n"
            "print(json.dumps({'dir': str(r.schemas_dir()), 'event': r.schema('event'),"
            " 'models': str(r.models_dir())}))")
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    share = venv / "share" / "safecity-edge"
    assert Path(got["dir"]) == share / "schemas"
    assert got["event"] == json.loads((ROOT / "schemas" / "event.json").read_text())
    assert (Path(got["models"]) / "catalog.toml").is_file()
    assert not (venv / "bin" / "edge-sim").exists()
    bad = subprocess.run([str(py), "-c", "from edge_agent import resources as r; "
                          "r.schema('nope')"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "no schema 'nope'" in bad.stderr and "event" in bad.stderr


def install_sim(tmp: Path, editable: bool) -> tuple[Path, Path]:
    """A bare venv with the simulator project of a copy of this checkout installed (no
    dependencies); returns the venv and the copy."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    src = tmp / "checkout"
    src.mkdir()
    copy_checkout(src)
    r = subprocess.run([*PIP, "--python", str(venv / "bin" / "python"), "install", "--quiet",
                        "--no-deps", *(["-e"] if editable else []), str(src / "sim")],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    return venv, src


def test_the_simulator_installs_editable_from_the_checkout(tmp_path: Path) -> None:
    sim = tomllib.loads((ROOT / "sim" / "pyproject.toml").read_text())
    assert sim["project"]["scripts"] == {"edge-sim": "sim.cli:main"}
    assert "safecity-edge" in sim["project"]["dependencies"]
    venv, src = install_sim(tmp_path, editable=True)
    py = venv / "bin" / "python"
    assert (venv / "bin" / "edge-sim").is_file()
    out = subprocess.run([str(py), "-c", "import sim.clock; print(sim.clock.__file__)"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == src / "sim" / "clock.py"


def test_the_simulator_installed_outside_a_checkout_says_so(tmp_path: Path) -> None:
    venv, _ = install_sim(tmp_path, editable=False)
    out = subprocess.run([str(venv / "bin" / "edge-sim"), "--help"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0
    assert "runs from a checkout of safecity-edge" in out.stderr
    assert "pip install -e ./sim" in out.stderr


def test_the_makefile_installs_both_projects_editable() -> None:
    r = subprocess.run(["make", "-C", str(ROOT), "-n", "-B", "--no-print-directory", "venv"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert re.search(r"pip install .*-e '\.\[dev\]' -e \./sim", r.stdout), r.stdout


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_lint_and_type_check_tools_are_pinned_and_installed_at_the_pin(tool: str) -> None:
    pins = [d for d in PYPROJECT["project"]["optional-dependencies"]["dev"]
            if re.match(rf"{tool}\b", d)]
    assert len(pins) == 1 and re.fullmatch(rf"{tool}==[\w.]+", pins[0]), pins
    assert metadata.version(tool) == pins[0].split("==")[1], \
        f"the venv runs {tool} {metadata.version(tool)}, pyproject pins {pins[0]}: make venv"
