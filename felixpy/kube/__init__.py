"""Kubernetes-facing pieces: CRD generation from the resource models (and the Kubernetes datastore)."""
