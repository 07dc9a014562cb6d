"""docs/scenarios.md, written from the scenario schema itself (sim/scenario.py): every node,
signal, fault, expectation and command field with its type, default, bounds and meaning, so
the reference cannot drift from what `edge-sim check` accepts. `edge-sim docs` prints it."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from sim import scenario as s

HEAD = """# Scenario reference

Generated from `sim/scenario.py` by `edge-sim docs` (a test fails when this file and the
schema differ): run `.venv/bin/edge-sim docs > docs/scenarios.md` after changing the schema.
How to write and run a scenario: `sim/README.md`. Units are in the field names: `_s`
seconds, `_ms` milliseconds, `_g` acceleration in g, `_ppm` gas concentration, `_cm`
water level, `_hz` frequency. Times (`at_s`, `after_s`, ...) are scenario seconds.
"""


def _type(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f'`"{a}"`' for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [a for a in get_args(annotation) if a is not type(None)]
        return " \\| ".join(_type(a) for a in parts) + (
            " or none" if len(parts) < len(get_args(annotation)) else "")
    if origin in (list, dict):
        return f"{origin.__name__} of " + ", ".join(_type(a) for a in get_args(annotation))
    name = getattr(annotation, "__name__", str(annotation))
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
            "Path": "path", "Any": "any"}.get(name, name)


def _bounds(meta: list[Any]) -> str:
    out = []
    for m in meta:
        for cls, sign, attr in ((Ge, ">=", "ge"), (Gt, ">", "gt"), (Le, "<=", "le"),
                                (Lt, "<", "lt")):
            if isinstance(m, cls):
                out.append(f"{sign} {getattr(m, attr)}")
        pattern = getattr(m, "pattern", None)
        if pattern:
            out.append(f"pattern `{pattern}`")
    return ", ".join(out)


def _default(field: Any) -> str:
    if field.default is PydanticUndefined:
        return "required"
    if field.default is None:
        return "-"
    value = field.default
    return f"`{value!r}`" if not isinstance(value, bool) else f"`{str(value).lower()}`"


def table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    rows = ["| field | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        text = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | "
                    f"{_bounds(field.metadata)} | {text} |")
    return "\n".join(rows)


def render() -> str:
    parts = [HEAD, "## The scenario", table(s.Scenario, skip=("nodes", "signals", "faults",
                                                                "expect", "expect_none",
                                                                "commands")),
             "## `[[nodes]]`", table(s.NodeSpec), "## `[[signals]]`",
             "Each signal plays on one node (`node`: an id, a copy's id, or a prefix ending "
             "in `*`) from `at_s`."]
    signals: list[type[BaseModel]] = [
        s.GasLeakSignal, s.FloodSignal, s.QuakeSignal, s.TrafficSignal, s.RecordingSignal,
        s.MachinerySignal, s.ImpulseSignal, s.FootstepsSignal]
    for model in signals:
        kind = get_args(model.model_fields["type"].annotation)[0]
        board = s.SIGNAL_KIND.get(kind, "gas, flood or vibration")
        doc = " ".join((model.__doc__ or "").split()) if model.__doc__ else ""
        parts += [f"### `type = \"{kind}\"` ({board} boards)", *( [doc] if doc else []),
                  table(model, skip=("type",))]
    parts += ["## `[[faults]]`", table(s.Fault),
              "Which fields each fault type reads (besides `type` and `at_s`); any other "
              "field given is an error:", "| type | fields |", "|---|---|"]
    parts += [f"| `{t}` | {', '.join(f'`{f}`' for f in sorted(fields)) or '-'} |"
              for t, fields in s.FAULT_FIELDS.items()]
    parts += ["## `[[expect]]`", "An event of `event` (one the named nodes can send) must "
              "arrive at the broker within `within_s` of `after_s`.", table(s.Expect),
              "## `[[expect_none]]`", "No such event may arrive in the window.",
              table(s.ExpectNone), "## `[[commands]]`", table(s.Command)]
    return "\n\n".join(parts) + "\n"


DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"
