"""Output-family adapters, one module each, chosen by format key or recognised by layout.

Adding a family means one module and one entry in ADAPTERS; this file must never decode."""

from __future__ import annotations

from edge_agent.detect.adapters.base import Adapter, Candidates, ModelInfo, OutputSpec
from edge_agent.detect.adapters.e2e import E2E
from edge_agent.detect.adapters.ultralytics import Ultralytics
from edge_agent.detect.adapters.yolox import Yolox

ADAPTERS: dict[str, type[Adapter]] = {a.key: a for a in (E2E, Ultralytics, Yolox)}
"""In auto-detection order: the most specific claim first."""

__all__ = ["ADAPTERS", "Adapter", "Candidates", "ModelInfo", "OutputSpec", "select"]


def select(info: ModelInfo, wanted: str = "auto") -> Adapter:
    """The adapter for `wanted`, or the one whose layout the model shows; ModelError if none."""
    if wanted != "auto":
        if wanted not in ADAPTERS:
            raise info.error(f"unknown format {wanted!r} (known: {', '.join(ADAPTERS)})")
        return ADAPTERS[wanted](info)
    for adapter in ADAPTERS.values():
        if adapter.claims(info):
            return adapter(info)
    raise info.error(
        "unknown output layout (known: yolox [1,N,5+classes] with N grid cells, ultralytics "
        "[1,4+classes,N] or [1,N,5+classes], e2e [1,K,6], [K,7] or num_dets/boxes/scores/"
        "classes)")
