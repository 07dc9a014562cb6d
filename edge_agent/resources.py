"""Where the files that ship beside the code live: the model catalog, labels and the JSON
Schemas of the MQTT contract.

A checkout (or editable install) reads them from `models/` and `schemas/`; an installed wheel
from the copies it puts under `<prefix>/share/safecity-edge/`. Never looks anywhere else."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

_CHECKOUT = Path(__file__).resolve().parent.parent
_INSTALLED = Path(sys.prefix) / "share" / "safecity-edge"


def models_dir() -> Path:
    source = _CHECKOUT / "models"
    return source if (source / "catalog.toml").exists() else _INSTALLED / "models"


def schemas_dir() -> Path:
    source = _CHECKOUT / "schemas"
    return source if (source / "event.json").exists() else _INSTALLED / "schemas"


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one message kind (`event`, `status`, ...); a name with no schema
    raises ValueError listing the ones there are."""
    path = schemas_dir() / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in schemas_dir().glob("*.json"))
        raise ValueError(f"no schema {name!r} in {schemas_dir()}: known {', '.join(known)}")
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a schema must be a JSON object")
    return doc
