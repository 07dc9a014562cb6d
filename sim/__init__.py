"""Hardware-in-the-loop simulator: real firmware and real agent against simulated physics.

Nothing in here is imported by the agent or the firmware at run time."""
