"""Finds the sample clip and the models the demo and the simulator use.

Never commits or copies them into the repository: they live in ../shared or under var/."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from edge_agent.catalog import fetch

OPENCV_DOC_CLIP = "usr/share/doc/opencv-doc/examples/data/vtest.avi"


def sample_clip(shared: Path, var: Path) -> Path:
    """vtest.avi from the shared media folder, else from Debian's opencv-doc package."""
    local = shared / "media" / "vtest.avi"
    if local.exists():
        return local
    cached = var / "media" / "vtest.avi"
    if cached.exists():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True)
        deb = next(Path(tmp).glob("opencv-doc_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), tmp + "/x"], check=True)
        src = Path(tmp) / "x" / OPENCV_DOC_CLIP
        if not src.exists():
            gz = src.with_suffix(".avi.gz")
            if gz.exists():
                subprocess.run(["gunzip", str(gz)], check=True)
        shutil.copyfile(src, cached)
    return cached


def model(name: str, shared: Path, var: Path) -> Path:
    """A catalog model, seeded from the shared models folder when it exists."""
    offline = shared / "models"
    return fetch(name, var / "models", offline if offline.is_dir() else None)


def dynamic_copy(model: Path) -> Path:
    """The model's dynamic-input copy next to it, as `flash.sh pi` installs it on a node:
    made once (`edge-agent models dynamic`), again only when the model is newer."""
    from edge_agent.modeltools.dynamic import dynamic_path, make_dynamic

    out = dynamic_path(model)
    if not out.is_file() or out.stat().st_mtime < model.stat().st_mtime:
        make_dynamic(model, out, timing_runs=1)
    return out
