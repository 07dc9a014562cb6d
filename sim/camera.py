"""A simulated camera node: the real agent (`python -m edge_agent.cli run`) reading a video
file with a zone config written from a template, as a child process.

Only writes the node's config and starts, stops or kills the process; never imports the
agent, so the simulator tests what a deployed node runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from edge_agent.catalog import load_catalog
from sim import media


def camera_config(template: Path, out: Path, *, clip: Path, model: Path, port: int,
                  state_dir: Path, realtime: bool = True, **overrides: Any) -> Path:
    """Write a runnable node config from a template with local paths filled in."""
    doc = tomllib.loads(template.read_text())
    doc["node"]["state_dir"] = str(state_dir)
    doc["camera"]["source"] = str(clip)
    doc["camera"]["realtime"] = realtime
    doc["detector"]["model"] = str(model)
    doc["mqtt"]["port"] = port
    for section, values in overrides.items():
        if isinstance(values, list):  # zones, lines, rules: replaced whole
            doc[section] = values
        else:
            doc.setdefault(section, {}).update(values)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tomli_w.dumps(doc))
    return out


DYNAMIC = "_dynamic.onnx"
"""A template's model named NAME_dynamic.onnx is the catalog model NAME.onnx's dynamic-input
copy, the file `flash.sh pi` installs."""


def template_media(template: Path, shared: Path, var: Path) -> tuple[Path, Path]:
    """The clip and model a template names: a file next to the template when there is one,
    else the sample clip and the catalog model of that file name (../shared or var/), or
    that model's dynamic-input copy (made under var/)."""
    doc = tomllib.loads(template.read_text())
    source = template.parent / str(doc["camera"]["source"])
    clip = source if source.is_file() else media.sample_clip(shared, var)
    named = template.parent / str(doc["detector"]["model"])
    if named.is_file():
        return clip, named
    _, entries = load_catalog()
    by_file = {e.file: name for name, e in entries.items()}
    dynamic = named.name.endswith(DYNAMIC)
    published = named.name.removesuffix(DYNAMIC) + ".onnx" if dynamic else named.name
    model = media.model(by_file.get(published, "yolox-nano"), shared, var)
    return clip, media.dynamic_copy(model) if dynamic else model


class CameraNode:
    """One agent process; `kill()` is a power cut, `stop()` a graceful shutdown (the agent
    ends its open events and publishes its own offline status)."""

    kind = "camera"

    def __init__(self, node: str, config: Path, workdir: Path) -> None:
        self.node = node
        self.config = config
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []

    def start(self) -> CameraNode:
        self.dir.mkdir(parents=True, exist_ok=True)
        # INFO: each event's log line is what the node says it sent (sim/sent.py)
        with open(self.dir / "agent.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(self.config),
                 "--log-level", "INFO"], stdout=log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.alive() else None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.exits.append(self.proc.wait())

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.exits.append(self.proc.wait(timeout))
            except subprocess.TimeoutExpired:
                self.kill()
        elif not self.exits or self.exits[-1] != self.proc.returncode:
            self.exits.append(self.proc.returncode)

    def log_text(self) -> str:
        try:
            return (self.dir / "agent.log").read_text(errors="replace")
        except OSError:
            return ""
