"""`make bench`: speed and memory figures, measured in one run and written to bench/results/.

Never asserts timings; each figure is printed next to its target."""
