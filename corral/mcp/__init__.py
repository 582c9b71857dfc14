"""The sans-io MCP / JSON-RPC protocol core shared by the shim and the gateway.

No I/O here: parsing, classification, error construction and SSE framing only."""
