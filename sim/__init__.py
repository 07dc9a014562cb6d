"""Hardware-in-the-loop simulator: real firmware and real agent against simulated physics.

Nothing in here is imported by the agent or the firmware at run time. It runs the firmware of
the checkout it sits in, so it is installed editable (`pip install -e ./sim`) and refuses to
load from anywhere else."""

from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
if not (_CHECKOUT / "firmware" / "main.py").is_file():
    raise ImportError(f"the simulator runs from a checkout of safecity-edge, and {_CHECKOUT} "
                      "has no firmware/main.py: install it from the checkout with "
                      "`pip install -e ./sim`")
