"""The kopf operator: thin handlers over pure builders and one Kubernetes adapter."""
