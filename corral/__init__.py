"""Corral: a Kubernetes-native platform for Model Context Protocol servers."""

__version__ = "0.1.0"
