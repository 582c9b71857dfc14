"""The edge: authentication, routing, sessions, registry, audit store.

Rule: the request path does no database or IdP call that a cache can answer; Postgres is reached
through ``corral.store`` only. Modules so far:

- ``authn``: bearer token -> ``Principal`` (API keys through a cache, static dev directory).
- ``bearer``: reading bearer tokens and the 401/403 answers (RFC 6750, RFC 9728).
- ``app``: ``create_app(settings)``, the route table and the resources in ``cleanup_ctx``.
- ``appkeys``: the typed application keys and the role checks handlers share.
- ``audit_api``, ``apikeys_api``: thin HTTP handlers over ``corral.store``.
- ``metrics``: the Prometheus metrics, one registry per application.
- ``apikey_command``: the ``corral apikey`` CLI.
- ``routing``: the MCP front door ``/mcp/{namespace}/{server}``, its RFC 9728 metadata, the JWKS.
- ``edge``: route shapes, origins, request ids, the per-user rate limit.
- ``sessions``: session ids sealed with AES-GCM (upstream id, instance, user).
- ``signing``: the identity-assertion signing keys and JWKS.
- ``directory``, ``kubedirectory``: server discovery (static list, Kubernetes watch cache).
- ``registry``, ``registry_api``: ``/v0/servers`` (the catalog as an MCP Registry) and
  ``/api/servers`` (what the caller may use): pure shaping, thin handlers.
- ``instances``: ensure-running (``AlwaysRunning``; ``KubernetesInstances`` in ``kubedirectory``).
- ``activity``: ``lastActivity`` and listed tools written to status, off the request path.
- ``config``, ``command``: the config file and the ``corral gateway`` CLI.
"""
