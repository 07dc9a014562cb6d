"""Offline model tools, run by a technician or the bench, never by a running node: make a
dynamic-input copy (`dynamic`), quantize to int8 (`quantize`), and measure how two detectors
agree (`agreement`, `compare`). The runtime detector lives in `edge_agent.detect`."""
