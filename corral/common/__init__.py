"""Plumbing shared by every process: logging, settings helpers, networking."""
