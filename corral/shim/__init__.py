"""The sidecar beside every MCP server: identity, policy, filters, token exchange, audit."""
