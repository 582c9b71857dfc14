"""The one-machine runtime behind `corral dev` (docs/dev.md).

Rule: the same manifests, models, shim configuration and processes as in a cluster, run as
local processes. Desired state is pure (`manifests` reads and validates, `plans` decides what
runs); `runtime` applies it: `postgres` (embedded database), `servers` (a server and its shim as
supervised `children`), the gateway application in process, `secrets` kept in the data
directory, `tokens` for shim audit, `probe` for tool counts, `output` for what is printed.
"""
