"""Serves a stdio MCP server as streamable HTTP on localhost."""
