"""What every inference backend offers the detector: tensors in, the model's outputs out.

A backend runs the graph and nothing else; it must never touch images or decode boxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

Tensor = npt.NDArray[np.floating]
INPUT_TYPES: dict[str, type[np.floating]] = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16}
"""The model input element types the detector feeds, by onnxruntime's type name."""
Outputs = Sequence[npt.NDArray[np.generic]]


class Backend(Protocol):
    name: str

    def run(self, tensor: Tensor) -> Outputs:
        """The model's outputs in its declared output order. Blocks the calling thread but
        not the GIL, so other Python threads work meanwhile."""
        ...

    def for_worker(self) -> Backend:
        """A backend one more thread may call `run` on at the same time as this one: the
        same object when the engine allows concurrent runs, else a fresh copy."""
        ...
