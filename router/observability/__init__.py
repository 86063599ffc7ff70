"""Access log and Prometheus metrics."""
