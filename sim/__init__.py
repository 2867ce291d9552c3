"""Trace-driven discrete-event simulator of slinfer (DESIGN.md §6); see docs/SIMULATOR.md."""
