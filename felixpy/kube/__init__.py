"""Kubernetes-facing pieces: CRDs generated from the resource models (``crds``), Kubernetes objects as
v3 resources (``convert``, used by the Kubernetes datastore in ``felixpy.datastore.kubernetes``), and
``install-cni``."""
