"""The edge: authentication, routing, sessions, registry, audit store."""
