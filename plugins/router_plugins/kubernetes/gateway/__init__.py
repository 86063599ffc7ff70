"""The Gateway API provider (``gateway.networking.k8s.io/v1``, following v1.2)."""
