"""Corral's tests: a package, so test modules import as `tests.<dir>.<module>` and never shadow
installed packages of the same name (tests/mcp beside the `mcp` SDK).
"""
