"""The local Kubernetes control plane: built from Go modules by `build`, run by `launcher`."""
