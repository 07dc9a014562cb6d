"""Class names for a model: an explicit labels file, else its metadata, else COCO, else class_N.

Parses metadata with ast.literal_eval only; it must never eval text taken from a model file."""

from __future__ import annotations

import ast
from pathlib import Path

from edge_agent.detect.errors import ModelError
from edge_agent.resources import models_dir

COCO_LABELS = models_dir() / "coco.txt"


def label_name(labels: list[str], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else f"class_{class_id}"


def from_metadata(text: str) -> list[str] | None:
    """Ultralytics writes `names` as a Python literal ("{0: 'Normal', 1: 'Fall'}")."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, dict) and value and all(isinstance(k, int) and k >= 0 for k in value):
        return [str(value.get(i, f"class_{i}")) for i in range(max(value) + 1)]
    if isinstance(value, list | tuple) and value:
        return [str(v) for v in value]
    return None


def read_file(path: Path) -> list[str]:
    """One name per line; trailing blank lines are ignored, blank lines inside are not."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(path, "labels file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ModelError(path, f"cannot read labels file: {why}") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ModelError(path, "labels file is empty")
    for i, name in enumerate(names):
        if not name:
            raise ModelError(path, f"labels file line {i + 1} is blank")
    return names


def resolve(metadata: dict[str, str], labels_file: Path | None, num_classes: int | None,
            model: Path) -> list[str]:
    """The user's file wins, so a mismatched one fails loudly instead of being ignored."""
    if labels_file is not None:
        names = read_file(labels_file)
        if num_classes is not None and len(names) != num_classes:
            raise ModelError(labels_file, f"labels file has {len(names)} names but the model "
                                          f"{model.name} has {num_classes} classes")
        return names
    meta = metadata.get("names")
    names_meta = from_metadata(meta) if meta else None
    if names_meta:
        if num_classes is not None and len(names_meta) < num_classes:
            names_meta += [f"class_{i}" for i in range(len(names_meta), num_classes)]
        return names_meta
    if num_classes == 80 and COCO_LABELS.exists():
        return read_file(COCO_LABELS)
    return [f"class_{i}" for i in range(num_classes or 0)]
