"""Corral's benchmarks: `python -m bench run [SCENARIO ...]` (see bench/README.md).

Rule: every scenario starts its own processes on loopback, measures with a load generator that is
shown not to be the bottleneck, writes bench/results/<date>-<scenario>.json and stops everything
it started. The README table is generated from the results (`python -m bench report`).
"""
