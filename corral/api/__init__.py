"""Resource models, policy semantics, conditions and CRD generation.

Pure data and pure functions: this package imports no kopf and no aiohttp.web."""
