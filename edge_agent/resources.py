"""Where the files that ship beside the code live: the model catalog and labels.

A checkout (or editable install) reads them from `models/`; an installed wheel from the copy
it puts under `<prefix>/share/safecity-edge/models`. Never looks anywhere else."""

from __future__ import annotations

import sys
from pathlib import Path

_SOURCE = Path(__file__).resolve().parent.parent / "models"
_INSTALLED = Path(sys.prefix) / "share" / "safecity-edge" / "models"


def models_dir() -> Path:
    return _SOURCE if (_SOURCE / "catalog.toml").exists() else _INSTALLED
